package event

import (
	"os"
	"strings"
)

// Kmsg writes each line it is given into the kernel's log buffer through
// the kmsg device (Documentation/ABI/testing/dev-kmsg), so that the crash
// dump the kernel leaves when it dies (pstore) names the slot, version
// and root hash that were running: pkg/pstore attributes a crash by these
// lines. Use it next to the console, as io.MultiWriter(os.Stdout, Kmsg{}).
//
// Every line goes in at level 7 (debug), below the default console log
// level, so that the console does not show each event twice. The device
// is opened for each write: the kernel rate-limits writes per open file
// (10 lines every 5 seconds, printk.devkmsg=ratelimit, the default), and
// a boot logs more than that. Errors are dropped: the console line is the
// event's primary copy, and the kmsg device is missing outside the init.
type Kmsg struct {
	// Path is the device; "" means /dev/kmsg.
	Path string
}

func (k Kmsg) Write(p []byte) (int, error) {
	path := k.Path
	if path == "" {
		path = "/dev/kmsg"
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return len(p), nil
	}
	defer f.Close()
	// One write is one log record: write each line by itself.
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line != "" {
			f.WriteString("<7>" + line)
		}
	}
	return len(p), nil
}
