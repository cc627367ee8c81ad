package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/secureboot"
	"github.com/abboot/abboot/pkg/slot"
)

// sbStatus is the "secure_boot" object of `abctl status --json`:
// the firmware's Secure Boot state and, per slot, whether the firmware
// would run its UKI ("ok") or why not.
type sbStatus struct {
	SecureBoot bool              `json:"secure_boot"`
	SetupMode  bool              `json:"setup_mode"`
	Error      string            `json:"error,omitempty"` // db or dbx unreadable
	Slots      map[string]string `json:"slots,omitempty"` // slot -> "ok" or the refusal
}

// secureBootCmd is `abctl secureboot enroll DIR`: put the owner's PK, KEK
// and db into the firmware from DIR's db.auth, KEK.auth and PK.auth
// (signed updates made by `abimage sbkeys`; no private key is needed on
// the device), and `abctl secureboot verify FILE`: would the firmware run
// this UKI.
func secureBootCmd(g *globals, args []string) error {
	const use = "usage: abctl secureboot enroll DIR | verify FILE.efi"
	if len(args) != 2 {
		return errors.New(use)
	}
	vars := efivar.Open(g.efivars)
	switch args[0] {
	case "enroll":
		us, err := secureboot.LoadUpdates(args[1])
		if err != nil {
			return err
		}
		if err := secureboot.Enroll(vars, us); err != nil {
			return err
		}
		fmt.Println("enrolled PK, KEK and db; Secure Boot is enforced from the next boot")
		return nil
	case "verify":
		fw, err := secureboot.ReadFirmware(vars)
		if err != nil {
			return err
		}
		b, err := os.ReadFile(args[1])
		if err != nil {
			return err
		}
		res, err := secureboot.Verify(b, fw.DB, fw.DBX)
		if err != nil {
			return err
		}
		fmt.Println(describe(res))
		return nil
	}
	return errors.New(use)
}

func describe(res *secureboot.Result) string {
	if res.Signer == nil {
		return fmt.Sprintf("ok: digest %x is in db", res.Digest)
	}
	return fmt.Sprintf("ok: signed by %q (db: %q)", res.Signer.Subject, res.Anchor.Subject)
}

// secureBoot reads the firmware's Secure Boot state and checks each slot's
// UKI against its db and dbx.
func (s *system) secureBoot() *sbStatus {
	fw, err := secureboot.ReadFirmware(s.vars)
	if err != nil {
		return &sbStatus{Error: err.Error()}
	}
	st := &sbStatus{SecureBoot: fw.SecureBoot, SetupMode: fw.SetupMode, Slots: map[string]string{}}
	for _, sl := range slot.All {
		path, done, err := s.ukiFile(sl)
		if err != nil {
			st.Slots[string(sl)] = "unreadable: " + err.Error()
			continue
		}
		b, err := os.ReadFile(path)
		done()
		if err == nil {
			_, err = secureboot.Verify(b, fw.DB, fw.DBX)
		}
		st.Slots[string(sl)] = "ok"
		if err != nil {
			st.Slots[string(sl)] = err.Error()
		}
	}
	return st
}

// print writes the Secure Boot lines of `abctl status`.
func (st *sbStatus) print() {
	if st.Error != "" {
		fmt.Printf("secure boot: unknown (%s)\n", st.Error)
		return
	}
	mode := "user mode"
	if st.SetupMode {
		mode = "setup mode"
	}
	fmt.Printf("secure boot: %s (%s)", onOff(st.SecureBoot), mode)
	for _, sl := range slot.All {
		if v, ok := st.Slots[string(sl)]; ok {
			fmt.Printf("  %s: %s", sl, strings.SplitN(v, ":", 2)[0])
		}
	}
	fmt.Println()
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "off"
}

// ukiFile returns a readable path of slot sl's UKI and a function that
// removes it when it is a temporary copy. On a live system the UKI is read
// where the init mounted the ESP; in an image file, through mtools.
func (s *system) ukiFile(sl slot.Slot) (path string, done func(), err error) {
	switch {
	case s.run.ESPDir != "":
		return filepath.Join(s.run.ESPDir, sl.UKIPath()), func() {}, nil
	case s.disk != "":
		tmp, err := s.extract(sl.UKIPath())
		if err != nil {
			return "", nil, err
		}
		return tmp, func() { os.Remove(tmp) }, nil
	}
	return "", nil, errors.New("no ESP")
}

// bundleUKICheck is the installer's Secure Boot rule, for
// install.Options.CheckUKI: with Secure Boot on, a bundle whose UKI the
// firmware would refuse (not signed by db, or in dbx) is refused before
// anything is written, whatever its source (the installer reads the UKI
// ahead by range, or spools the bundle), and no flag overrides it. It is
// nil with Secure Boot off.
func bundleUKICheck(vars *efivar.Vars) (func([]byte) error, error) {
	fw, err := secureboot.ReadFirmware(vars)
	if err != nil {
		return nil, fmt.Errorf("reading the Secure Boot state: %w", err)
	}
	check := secureboot.HandoverCheck(fw, nil)
	if check == nil {
		return nil, nil
	}
	return func(b []byte) error {
		if err := check(b); err != nil {
			return fmt.Errorf("Secure Boot is on and the bundle's UKI would not boot: %w", err)
		}
		return nil
	}, nil
}
