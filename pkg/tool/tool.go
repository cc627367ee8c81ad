// Package tool finds the external programs abboot's build side runs and
// says which Debian package provides a missing one, so that a fresh
// machine gets one actionable line instead of "executable file not found".
package tool

import (
	"fmt"
	"os/exec"
)

// packages maps a program to the Debian package that ships it.
var packages = map[string]string{
	"objcopy":            "binutils",
	"mkfs.vfat":          "dosfstools",
	"mcopy":              "mtools",
	"mmd":                "mtools",
	"veritysetup":        "cryptsetup-bin",
	"sgdisk":             "gdisk",
	"cgpt":               "cgpt",
	"qemu-system-x86_64": "qemu-system-x86",
	"efibootmgr":         "efibootmgr",
	"mlabel":             "mtools",
	"fsck.vfat":          "dosfstools",
	"losetup":            "mount",
}

// Path returns the full path of name, or an error naming its package.
func Path(name string) (string, error) {
	p, err := exec.LookPath(name)
	if err != nil {
		if pkg, ok := packages[name]; ok {
			return "", fmt.Errorf("%s not found: apt-get install %s", name, pkg)
		}
		return "", fmt.Errorf("%s not found in PATH", name)
	}
	return p, nil
}

// Run runs name with args and returns its combined output; a failure
// includes that output, since these tools explain themselves there.
func Run(name string, args ...string) ([]byte, error) {
	p, err := Path(name)
	if err != nil {
		return nil, err
	}
	out, err := exec.Command(p, args...).CombinedOutput()
	if err != nil {
		return out, fmt.Errorf("%s %v: %w: %s", name, args, err, out)
	}
	return out, nil
}
