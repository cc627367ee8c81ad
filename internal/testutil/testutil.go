// Package testutil holds the helpers the interop tests share: running the
// real tools (sgdisk, cgpt, efibootmgr, mtools) and failing with the Debian
// package to install when one is missing, since CI installs them all.
package testutil

import (
	"testing"

	"github.com/abboot/abboot/pkg/tool"
)

// RequireTool fails the test when name is not installed.
func RequireTool(t testing.TB, name string) {
	t.Helper()
	if _, err := tool.Path(name); err != nil {
		t.Fatal(err)
	}
}

// Run runs a tool and returns its output, failing the test on error.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := tool.Run(name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}
