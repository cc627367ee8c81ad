package main

import (
	"strings"
	"testing"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/efivar"
	"github.com/abboot/abboot/pkg/secureboot"
)

// TestSecureBootRefusesTarget: with Secure Boot on and a db that does not
// sign B's UKI, the init hands over to B neither by kexec nor by BootNext:
// B is marked bad in the stored state, event=verify says why, and A boots.
func TestSecureBootRefusesTarget(t *testing.T) {
	r := pending(t, both)
	ks, err := secureboot.GenerateKeySet("init test")
	if err != nil {
		t.Fatal(err)
	}
	v := efivar.Open(r.vars)
	for _, w := range []struct {
		name   string
		vendor [16]byte
		data   []byte
	}{
		{"SecureBoot", efivar.GlobalVariable, []byte{1}},
		{"SetupMode", efivar.GlobalVariable, []byte{0}},
		{"db", secureboot.ImageSecurityDatabase, secureboot.MarshalCerts(secureboot.Owner, ks.DB.Cert)},
	} {
		if err := v.Set(w.name, w.vendor, efivar.AttrBootserviceAccess|efivar.AttrRuntimeAccess, w.data); err != nil {
			t.Fatal(err)
		}
	}
	staged := false
	_, sel, lines := r.bootSel("", func(string, []byte, func(string) string) error { staged = true; return nil })
	if d := sel.Decision; d.Action != bootcheck.Continue || d.Target != "a" || staged {
		t.Fatalf("decision %+v (staged %v), want to stay on a with nothing staged", d, staged)
	}
	if b := r.state().B; b.Priority != 0 || b.Tries != 0 {
		t.Errorf("B after its UKI was refused: %+v, want marked bad and stored", b)
	}
	if count(lines, `event=verify slot=b action=kexec bytes=`) != 1 || !strings.Contains(strings.Join(lines, "\n"), "malformed PE image") {
		t.Errorf("no verify line saying why:\n%s", strings.Join(lines, "\n"))
	}
}
