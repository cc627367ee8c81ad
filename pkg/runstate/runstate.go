// Package runstate records what abboot's init decided for this boot, so
// that the OS (its health check, abctl) need not decide it again: after a
// kexec, BootCurrent and LoaderDevicePartUUID are stale, and only the init
// saw the handover. The record is a small JSON file on /run, a tmpfs that
// lives exactly as long as the boot; nothing here touches NVRAM or disks.
package runstate

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
)

// Path is where the init writes the record.
var Path = "/run/abboot/state.json"

// State is one boot's record.
type State struct {
	Slot    string `json:"slot"`              // running slot, "a" or "b"
	How     string `json:"how"`               // how the slot was learned: handover, bootcurrent, fallback, default
	Version string `json:"version,omitempty"` // VERSION_ID of the running image
	ESP     string `json:"esp,omitempty"`     // ESP partition device
	Disk    string `json:"disk,omitempty"`    // disk holding the ESP
	ESPDir  string `json:"esp_dir,omitempty"` // where the init mounted the ESP (read-only)
	// CrashLimit is the abboot.crash-limit the init decided with (0:
	// off), so that abctl status can say why a slot is not preferred.
	CrashLimit int `json:"crash_limit"`
}

// Write stores s at Path.
func Write(s State) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(Path), 0o755); err != nil {
		return fmt.Errorf("writing run state: %w", err)
	}
	if err := os.WriteFile(Path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("writing run state: %w", err)
	}
	return nil
}

// Read loads the record; it fails when abboot's init did not boot this
// system.
func Read() (State, error) {
	var s State
	b, err := os.ReadFile(Path)
	if err != nil {
		return s, fmt.Errorf("reading run state: %w", err)
	}
	if err := json.Unmarshal(b, &s); err != nil {
		return s, fmt.Errorf("reading run state %s: %w", Path, err)
	}
	return s, nil
}
