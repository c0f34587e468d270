package main

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/spf13/cobra"

	"github.com/interlock-dev/interlock/internal/notify"
)

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// notificationsCmd is "interlock notifications": helpers for the approval
// notification channels.
func (c *cli) notificationsCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "notifications", Short: "Set up approval notifications"}
	var subject, env string
	keys := &cobra.Command{
		Use:   "vapid-keys",
		Short: "Make a VAPID key pair for Web Push to the console and print the configuration to paste",
		Long: `Make a VAPID (RFC 8292) key pair for Web Push notifications to the approvers'
console, and print the private key (a secret: keep it in the environment), the
public key, and the notifications.web_push section to paste into interlock.yaml.
Every replica needs the same key. Replacing it later makes every browser
subscribe again: subscriptions made with the old key stop receiving.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if !strings.HasPrefix(subject, "mailto:") && !strings.HasPrefix(subject, "https://") {
				return fmt.Errorf("--subject %q: want a mailto: address or an https:// URL", subject)
			}
			if !envName.MatchString(env) {
				return fmt.Errorf("--env %q: want an environment variable name (A-Z, 0-9, _)", env)
			}
			priv, pub, err := notify.GenerateVAPIDKeys()
			if err != nil {
				return err
			}
			key, err := notify.MarshalVAPIDPrivateKey(priv)
			if err != nil {
				return err
			}
			fmt.Fprintf(c.stdout, `# VAPID private key: a secret. Put it in the environment of every replica:
export %s=%s

# VAPID public key (browsers subscribe with it; the console derives it from the private key):
# %s

# Paste into interlock.yaml:
notifications:
  web_push:
    vapid_private_key: ${%s}
    subject: %s
`, env, key, pub, env, subject)
			return nil
		},
	}
	keys.Flags().StringVar(&subject, "subject", "mailto:security@example.com", "contact for push services: a mailto: address or an https:// URL")
	keys.Flags().StringVar(&env, "env", "INTERLOCK_VAPID_PRIVATE_KEY", "name of the environment variable that holds the private key")
	cmd.AddCommand(keys)
	return cmd
}
