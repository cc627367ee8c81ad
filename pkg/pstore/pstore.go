// Package pstore reads the crash records the kernel leaves in pstore
// (Documentation/admin-guide/pstore.rst; with efi_pstore, in EFI
// variables, written only when the kernel dies) and tells which slot's
// boot each one ends: abboot's reboot-reason channel (issue 13).
//
// A record is one part of one kernel log dump: a file named
// dmesg-BACKEND-ID under the pstore file system, whose first line is the
// header fs/pstore/platform.c writes ("Panic#1 Part1": why, the dump's
// count in its boot, the part, Part1 holding the newest lines), then the
// log lines. When the kernel could not decompress a compressed record, the
// file keeps the compressed bytes and the suffix ".enc.z"; Parse inflates
// it (raw deflate, crypto/deflate.c's format, or zlib). A dump is
// attributed to a slot by the init's events in it (event.Kmsg): the slot
// of the last start, verity, mount or exec event, and to a boot by the
// start event's boot key.
//
// The package reads, attributes and removes records. It does not count
// crashes nor decide anything (bootcheck does, from Input.Crashed), and it
// reads no other pstore file (console, pmsg, ftrace).
package pstore

import (
	"bufio"
	"bytes"
	"compress/flate"
	"compress/zlib"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/slot"
)

// Dir is where the init mounts the pstore file system.
const Dir = "/sys/fs/pstore"

// maxRecord bounds a record, inflated: efi_pstore's records are 1 KiB
// (its record_size), other backends' a few tens of KiB.
const maxRecord = 1 << 20

// Record is one dmesg record.
type Record struct {
	Name  string    // file name in the pstore directory
	Why   string    // Panic, Oops, Emergency, ... (kmsg_dump_reason_str)
	Count int       // the dump's number in its boot (oopscount)
	Part  int       // 1 is the newest part of the dump
	Time  time.Time // when the record was written (the file's mtime)
	Text  string    // the log lines
}

var header = regexp.MustCompile(`^([A-Za-z]+)#([0-9]+) Part([0-9]+)$`)

// IsDump reports whether a pstore file name is a kernel log dump record.
func IsDump(name string) bool { return strings.HasPrefix(name, "dmesg-") }

// Parse reads one record file's contents.
func Parse(name string, data []byte) (Record, error) {
	r := Record{Name: name}
	if !IsDump(name) {
		return r, fmt.Errorf("pstore record %s: not a dmesg record", name)
	}
	if strings.HasSuffix(name, ".enc.z") {
		var err error
		if data, err = inflate(data); err != nil {
			return r, fmt.Errorf("pstore record %s: %w", name, err)
		}
	}
	first, rest, _ := bytes.Cut(data, []byte("\n"))
	m := header.FindSubmatch(bytes.TrimSuffix(first, []byte("\r")))
	if m == nil {
		return r, fmt.Errorf("pstore record %s: header %q is not WHY#COUNT PartN", name, first)
	}
	r.Why = string(m[1])
	var err1, err2 error
	r.Count, err1 = strconv.Atoi(string(m[2]))
	r.Part, err2 = strconv.Atoi(string(m[3]))
	if err := errors.Join(err1, err2); err != nil {
		return r, fmt.Errorf("pstore record %s: header %q: %w", name, first, err)
	}
	r.Text = string(rest)
	return r, nil
}

// inflate undoes pstore's compression: raw deflate (the crypto API's
// "deflate", negative window bits) or, failing that, zlib.
func inflate(data []byte) ([]byte, error) {
	out, err := io.ReadAll(io.LimitReader(flate.NewReader(bytes.NewReader(data)), maxRecord))
	if err == nil {
		return out, nil
	}
	z, zerr := zlib.NewReader(bytes.NewReader(data))
	if zerr == nil {
		out, zerr = io.ReadAll(io.LimitReader(z, maxRecord))
		if zerr == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("compressed record: deflate: %v; zlib: %v", err, zerr)
}

// Mount mounts the pstore file system on dir; one already there is fine.
func Mount(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mounting pstore: %w", err)
	}
	if err := unix.Mount("pstore", dir, "pstore", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil && !errors.Is(err, unix.EBUSY) {
		return fmt.Errorf("mounting pstore on %s: %w", dir, err)
	}
	return nil
}

// Read returns the dmesg records in dir, in the order they were written
// (see Crashes), and an error
// naming each file that could not be read or parsed (those are left in
// place: Remove only removes what Read returned).
func Read(dir string) ([]Record, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading pstore: %w", err)
	}
	var recs []Record
	var errs []error
	for _, e := range ents {
		if !IsDump(e.Name()) || !e.Type().IsRegular() {
			continue
		}
		r, err := readFile(dir, e)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		recs = append(recs, r)
	}
	sortWritten(recs)
	return recs, errors.Join(errs...)
}

// sortWritten sorts records in the order the kernel wrote them: by time,
// and within one second by part. A dump writes Part1 (its newest lines)
// first, then Part2 and on, each part stamped with its own time: on a
// slow firmware (OVMF under TCG, about 0.1 s per variable) one dump spans
// seconds.
func sortWritten(recs []Record) {
	sort.SliceStable(recs, func(i, j int) bool {
		a, b := recs[i], recs[j]
		if !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		return a.Part < b.Part
	})
}

func readFile(dir string, e os.DirEntry) (Record, error) {
	info, err := e.Info()
	if err != nil {
		return Record{}, fmt.Errorf("pstore record %s: %w", e.Name(), err)
	}
	f, err := os.Open(filepath.Join(dir, e.Name()))
	if err != nil {
		return Record{}, fmt.Errorf("pstore record %s: %w", e.Name(), err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxRecord))
	if err != nil {
		return Record{}, fmt.Errorf("pstore record %s: %w", e.Name(), err)
	}
	r, err := Parse(e.Name(), data)
	r.Time = info.ModTime()
	return r, err
}

// Remove deletes the records from dir, which frees their backend storage
// (for efi_pstore, deletes the EFI variables).
func Remove(dir string, recs []Record) error {
	var errs []error
	for _, r := range recs {
		if err := os.Remove(filepath.Join(dir, r.Name)); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("removing pstore record: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Crash is one crashed boot.
type Crash struct {
	// Slot is the slot the boot was running; "" when the dump holds
	// none of the init's events (the kernel died before the init, or
	// the dump's tail is all kernel lines).
	Slot slot.Slot
	// Boot is the boot's id (the start event's boot key); "" if unknown.
	Boot string
	// Reason is the panic message, or the first Oops or BUG line, or
	// the dump's why.
	Reason string
	// Records are the records of the crash.
	Records []string
}

// Crashes groups records into crashed boots: the parts of one dump belong
// together, and dumps of the same boot (an Oops, then the Panic it led
// to) are one crash. In the order the kernel wrote them (sortWritten), a
// dump is a run of records with the same why and count and rising parts;
// a Part1 starts the next dump, even one with the same why and count from
// another boot. Dumps of one boot share the boot id of their start event.
func Crashes(recs []Record) []Crash {
	recs = append([]Record(nil), recs...)
	sortWritten(recs)
	var dumps [][]Record // each Part1 first
	for _, r := range recs {
		if n := len(dumps); n > 0 {
			last := dumps[n-1][len(dumps[n-1])-1]
			if r.Why == last.Why && r.Count == last.Count && r.Part > last.Part {
				dumps[n-1] = append(dumps[n-1], r)
				continue
			}
		}
		dumps = append(dumps, []Record{r})
	}
	var out []Crash
	byBoot := map[string]int{}
	for _, d := range dumps {
		c := attribute(d)
		if i, ok := byBoot[c.Boot]; ok && c.Boot != "" {
			prev := &out[i]
			prev.Records = append(prev.Records, c.Records...)
			if c.Slot != "" {
				prev.Slot = c.Slot
			}
			prev.Reason = c.Reason // the later dump ends the boot
			continue
		}
		if c.Boot != "" {
			byBoot[c.Boot] = len(out)
		}
		out = append(out, c)
	}
	return out
}

// attribute reads one dump, its parts newest first.
func attribute(parts []Record) Crash {
	c := Crash{Reason: parts[0].Why}
	reasonFound := false
	for _, p := range parts {
		c.Records = append(c.Records, p.Name)
		lines := lines(p.Text)
		for i := len(lines) - 1; i >= 0; i-- {
			l := lines[i]
			if ev, ok := event.Parse(l); ok {
				if c.Slot == "" {
					c.Slot = slotOf(ev)
				}
				if c.Boot == "" && ev["event"] == "start" {
					c.Boot = ev["boot"]
				}
				continue
			}
			if reasonFound {
				continue
			}
			if _, msg, ok := strings.Cut(l, "Kernel panic - not syncing: "); ok {
				c.Reason, reasonFound = strings.TrimSpace(msg), true
			}
		}
	}
	if !reasonFound {
		for _, p := range parts {
			for _, l := range lines(p.Text) {
				if i := strings.Index(l, "BUG: "); i >= 0 && !reasonFound {
					c.Reason, reasonFound = strings.TrimSpace(l[i:]), true
				} else if i := strings.Index(l, "Oops: "); i >= 0 && !reasonFound {
					c.Reason, reasonFound = strings.TrimSpace(l[i:]), true
				}
			}
		}
	}
	return c
}

// slotOf returns the running slot an event names.
func slotOf(ev map[string]string) slot.Slot {
	var v string
	switch ev["event"] {
	case "start":
		v = ev["running"]
	case "verity", "mount", "exec":
		v = ev["slot"]
	}
	if s := slot.Slot(v); s == slot.A || s == slot.B {
		return s
	}
	return ""
}

func lines(text string) []string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(text))
	sc.Buffer(nil, maxRecord)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}
