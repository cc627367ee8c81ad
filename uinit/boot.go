package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"time"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/bootentry"
	"github.com/abboot/abboot/pkg/bootparam"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/esp"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/fallback"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/runstate"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/slot"
)

// loaderVendor is systemd's vendor GUID for the Boot Loader Interface
// variables, among them LoaderDevicePartUUID, which systemd-stub sets to
// the partition it was loaded from.
var loaderVendor = guid.MustParse("4a67b082-0a4c-41cf-b6c7-440b29bb8c4f")

// boot is the init's work between the basic mounts and the exec of the
// OS's init, with every outside dependency a field so tests can run it on
// image files and directories.
type boot struct {
	params   bootparam.Params
	vars     *efivar.Vars
	sysBlock string                           // /sys/class/block
	devDir   string                           // /dev
	mountESP func(dev string) (string, error) // returns the mount point
	// efivarsReady and disksReady, when set, return once EFI variables
	// and disks can be used (their modules are loaded), so that each
	// step starts as early as it can.
	efivarsReady, disksReady func()
	// kexecLoad stages a UKI for a kexec handover (kexec.LoadImage); nil
	// turns kexec off.
	kexecLoad func(path string, b []byte, editCmdline func(string) string) error
	// start hands over to a plan (handover.Env.Start).
	start func(*handover.Plan) error
	// env is the handover sequence's view of the machine, once chosen.
	env *handover.Env
	// newRoot is where the slot's verity root is mounted, once it is.
	newRoot string
	// tables are the disks' partition tables as the ESP search last
	// read them; the root search uses them rather than reading again.
	tables []esp.Table
	// replaceFallback makes the fallback copy slot s's UKI on the ESP
	// mounted at dir (fallback.ReplaceMounted).
	replaceFallback func(dir string, s slot.Slot) (bool, error)
	log             *event.Logger
	version         string
	// pstoreDir is where the crash records are ("" for none);
	// pstoreReady, when set, returns once they can be read (efi_pstore
	// loaded, pstore mounted).
	pstoreDir   string
	pstoreReady func()
	bootID      string        // the start event's boot key
	waitDisk    time.Duration // how long to wait for disks to appear
}

// run finds the ESP, learns the running slot, repairs the boot entries and
// the fallback copy, and chooses the slot to boot, handing over to it when
// it is not this one. It never fails: what cannot be done is logged and
// skipped.
func (b *boot) run(kernelMS int64) (runstate.State, *handover.Plan) {
	st := runstate.State{Version: b.version}
	// Firmware variable reads are slow runtime-service calls; overlap them
	// with the search for the ESP.
	var fw firmware
	mounted, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			// PID 1 must not die of a variable that does not decode.
			if r := recover(); r != nil {
				fw.entries, fw.entriesErr = nil, fmt.Errorf("reading boot entries: panic: %v", r)
			}
		}()
		if b.efivarsReady != nil {
			b.efivarsReady()
		}
		close(mounted)
		fw.entries, fw.entriesErr = b.vars.BootEntries()
		fw.current, fw.currentErr = b.vars.BootCurrent()
		fw.secureBoot, fw.secureBootErr = secureboot.ReadFirmware(b.vars)
	}()
	if b.disksReady != nil {
		b.disksReady()
	}
	<-mounted // findESP reads LoaderDevicePartUUID
	e := b.findESP()
	var espFS fs.FS
	if e != nil {
		st.ESP, st.Disk = e.Dev, e.Disk
		dir, err := b.mountESP(e.Dev)
		if err != nil {
			b.log.Error("esp", err, "dev", e.Dev)
		} else {
			espFS, st.ESPDir = os.DirFS(dir), dir
		}
	}
	var r *root
	rootFailed := false
	if h := b.params.RootHash; h != "" {
		var err error
		if r, err = b.findRoot(h); err != nil {
			// Rule 4: this slot's root is not there.
			b.log.Error("verity", err, "roothash", h)
			rootFailed = true
		}
	}
	<-done
	if fw.entriesErr != nil {
		// Entries that did not decode are named in the error; the
		// others are in the map. Without efivarfs, the map is nil.
		b.log.Error("efivar", fw.entriesErr)
	}
	if fw.entries == nil {
		fw.entries = map[uint16]*efivar.LoadOption{}
	}
	if fw.secureBootErr != nil {
		// Fail closed: db or dbx that cannot be read verifies nothing.
		b.log.Error("secureboot", fw.secureBootErr)
	}
	// The signed command line's root hash names the slot for sure.
	s, how, detail := slot.Slot(""), "roothash", []any(nil)
	if r != nil {
		s = r.slot
	} else {
		s, how, detail = b.detect(espFS, &fw)
	}
	st.Slot, st.How = string(s), how
	b.log.Log("start", append([]any{"running", s, "how", how}, append(detail,
		"version", b.version, "boot", b.bootID, "kernel_ms", kernelMS)...)...)
	if e != nil {
		b.repair(e, espFS, fw.entries, s)
	}
	disk := ""
	switch {
	case r != nil:
		disk = r.disk
	case e != nil:
		disk = e.Disk
	}
	sel := b.choose(disk, st.ESPDir, espFS, s, &fw, rootFailed)
	if r != nil && sel.Decision.Action == bootcheck.Continue {
		if err := b.mountRoot(r, "/newroot"); err != nil {
			// Rule 4: mark the slot bad and select again.
			sel = b.rootFailed(sel)
		} else {
			b.newRoot = "/newroot"
		}
	}
	if d := sel.Decision; d.Action == bootcheck.Continue && d.State.Get(s).Successful && espFS != nil && !fallback.Intact(espFS, s) {
		// Rule 8: the committed slot is running and the fallback copy
		// is missing or broken.
		if _, err := b.replaceFallback(st.ESPDir, s); err != nil {
			b.log.Error("repair", err, "what", "fallback", "slot", s)
		} else {
			b.log.Log("repair", "what", "fallback", "slot", s, "result", "ok")
		}
	}
	return st, sel
}

// firmware is what the init reads of the boot manager's variables.
type firmware struct {
	entries    map[uint16]*efivar.LoadOption
	entriesErr error
	current    uint16
	currentErr error
	// secureBoot is the Secure Boot state; with SecureBoot on, every
	// handover target's UKI is verified against its db and dbx.
	secureBoot    *secureboot.Firmware
	secureBootErr error
}

// findESP waits up to waitDisk for a disk with an ESP: block devices show
// up asynchronously once their driver module is loaded.
func (b *boot) findESP() *esp.ESP {
	// systemd's Boot Loader Interface: the ESP the stub was loaded from.
	var prefer guid.GUID
	s, err := b.vars.GetString("LoaderDevicePartUUID", loaderVendor)
	if err == nil {
		prefer, err = guid.Parse(strings.ToLower(s))
	}
	if err != nil && !errors.Is(err, efivar.ErrNotFound) {
		b.log.Error("efivar", err, "name", "LoaderDevicePartUUID")
	}
	deadline := time.Now().Add(b.waitDisk)
	for {
		var e *esp.ESP
		var err error
		if b.tables, err = esp.Scan(b.sysBlock, b.devDir); err == nil {
			e, err = esp.Pick(b.sysBlock, b.devDir, b.tables, prefer)
		}
		if err == nil {
			b.log.Log("esp", "dev", e.Dev, "disk", e.Disk, "partuuid", e.Part.UUID, "result", "ok")
			return e
		}
		if time.Now().After(deadline) {
			b.log.Error("esp", err)
			return nil
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// detect learns the running slot: the handover marker on the command
// line, else the file path of the entry the firmware booted (BootCurrent),
// else which slot's UKI the fallback copy is, else A. It returns the slot,
// how it was learned and key/value details for the start event.
func (b *boot) detect(espFS fs.FS, fw *firmware) (slot.Slot, string, []any) {
	if b.params.Handover != "" {
		s, _ := slot.Parse(b.params.Handover) // bootparam validated it
		return s, "handover", nil
	}
	var detail []any
	// BootCurrent is missing when the firmware did not boot through a
	// Boot#### entry; that is no error.
	if n, err := fw.current, fw.currentErr; err != nil && !errors.Is(err, efivar.ErrNotFound) {
		b.log.Error("efivar", err, "var", "BootCurrent")
	} else if err == nil {
		detail = append(detail, "boot_current", efivar.BootName(n))
		if o, ok := fw.entries[n]; ok {
			if p, ok := o.FilePath.File(); ok {
				if s, ok := slot.FromEFIPath(p); ok {
					return s, "bootcurrent", detail
				}
			}
		}
	}
	if espFS != nil {
		s, ok, err := fallback.Which(espFS)
		if ok {
			return s, "fallback", detail
		}
		if err != nil {
			b.log.Error("fallback", err)
		}
	}
	return slot.A, "default", detail
}

// repair fixes the firmware entries of the slots whose UKI is on the ESP,
// running slot first. A slot with no UKI gets no entry: firmware would
// only fail on it.
func (b *boot) repair(e *esp.ESP, espFS fs.FS, entries map[uint16]*efivar.LoadOption, running slot.Slot) {
	var slots []slot.Slot
	for _, s := range []slot.Slot{running, running.Other()} {
		if espFS != nil {
			if _, err := fs.Stat(espFS, s.UKIPath()); err != nil {
				b.log.Error("repair", fmt.Errorf("slot UKI: %w", err), "slot", s)
				continue
			}
		}
		slots = append(slots, s)
	}
	changes, err := bootentry.Repair(b.vars, entries, e, slots)
	for _, c := range changes {
		b.log.Log("repair", "var", c.Var, "what", c.What, "slot", c.Slot, "result", "ok")
	}
	if err != nil {
		b.log.Error("repair", err)
	}
}
