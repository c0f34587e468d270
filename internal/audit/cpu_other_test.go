//go:build !unix

package audit

import "time"

// cpuTime is not measured here; benchmarks then leave out CPU per event.
func cpuTime() time.Duration { return 0 }
