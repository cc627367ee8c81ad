//go:build tools

// This file is the list of the u-root commands that go into the initramfs:
// mkuimage.sh reads its imports (go list -tags tools) and bundles them,
// and importing them here keeps them in go.mod and go.sum, so that
// `go mod tidy` does not drop the packages mkuimage builds.
package tools

import (
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/dmesg"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/mkdir"
	_ "github.com/u-root/u-root/cmds/core/mount"
)
