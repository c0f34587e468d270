package notify_test

import (
	"io"
	"net/http"
	"time"

	"github.com/interlock-dev/interlock/internal/notify"
)

// A receiver of Webhook events checks the signature over the raw body
// before trusting anything in it.
func ExampleVerifySignature() {
	secret := []byte("whsec_from_config")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /interlock", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			http.Error(w, "read error", http.StatusBadRequest)
			return
		}
		err = notify.VerifySignature(secret, r.Header.Get(notify.SignatureHeader), body, time.Now(), 5*time.Minute)
		if err != nil {
			http.Error(w, "bad signature", http.StatusUnauthorized)
			return
		}
		// Drop repeats of r.Header.Get(notify.DeliveryHeader), then handle
		// the event in body.
		w.WriteHeader(http.StatusNoContent)
	})
	_ = mux // serve it with http.Server{Handler: mux}
}
