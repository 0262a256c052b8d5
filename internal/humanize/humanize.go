// Package humanize formats numbers and times for people: the logs of
// `cache` and the status page of `cache-serve` say sizes and ages the same
// way. It is a leaf: it imports nothing of the module.
package humanize

import (
	"fmt"
	"time"
)

// Bytes formats a byte count with a binary unit: "512 B", "1.5 KiB",
// "3.0 GiB".
func Bytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// Ago says roughly how long before now t was: "40s ago", "3h ago", "2d
// ago"; "never" for the zero time, "just now" for a time after now.
func Ago(now, t time.Time) string {
	if t.IsZero() {
		return "never"
	}
	d := now.Sub(t)
	switch {
	case d < 0:
		return "just now"
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}
