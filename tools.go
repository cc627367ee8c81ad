//go:build tools

// This file keeps the u-root commands that mkuimage.sh bundles into the
// initramfs in go.mod and go.sum: mkuimage builds them from this module,
// so `go mod tidy` must not drop their packages.
package tools

import (
	_ "github.com/u-root/u-root/cmds/core/cat"
	_ "github.com/u-root/u-root/cmds/core/dmesg"
	_ "github.com/u-root/u-root/cmds/core/gosh"
	_ "github.com/u-root/u-root/cmds/core/ls"
	_ "github.com/u-root/u-root/cmds/core/mkdir"
	_ "github.com/u-root/u-root/cmds/core/mount"
)
