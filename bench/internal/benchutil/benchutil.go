// Package benchutil holds what the benches (bench/...) share: building a
// verity tree for an image file and starting a timed run from a cold
// page cache. It is not for tests or the shipped commands.
package benchutil

import (
	"encoding/hex"
	"os"
	"os/exec"

	"github.com/abboot/abboot/pkg/verity"
)

// FormatTree writes the verity tree of the file data to the file tree
// with p and returns the root hash in hex.
func FormatTree(data, tree string, p verity.Params) (string, error) {
	d, err := os.Open(data)
	if err != nil {
		return "", err
	}
	defer d.Close()
	fi, err := d.Stat()
	if err != nil {
		return "", err
	}
	h, err := os.Create(tree)
	if err != nil {
		return "", err
	}
	defer h.Close()
	root, err := verity.Format(d, fi.Size(), h, p)
	return hex.EncodeToString(root), err
}

// DropCaches makes the next run start from the disk, not the page cache
// (needs root; without it every run reads from the cache alike).
func DropCaches() {
	exec.Command("sync").Run()
	os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0)
}
