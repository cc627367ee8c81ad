package slot

import "testing"

func TestPaths(t *testing.T) {
	for _, tc := range []struct {
		path string
		want Slot
		ok   bool
	}{
		{`\EFI\abboot\a.efi`, A, true},
		{`\efi\ABBOOT\B.EFI`, B, true},
		{"EFI/abboot/b.efi", B, true},
		{`\EFI\BOOT\BOOTX64.EFI`, "", false},
		{`\EFI\abboot\c.efi`, "", false},
	} {
		got, ok := FromEFIPath(tc.path)
		if got != tc.want || ok != tc.ok {
			t.Errorf("FromEFIPath(%q) = %q, %v; want %q, %v", tc.path, got, ok, tc.want, tc.ok)
		}
	}
	if !IsFallbackPath(`\efi\boot\bootx64.efi`) || IsFallbackPath(`\EFI\abboot\a.efi`) {
		t.Error("IsFallbackPath is wrong")
	}
	if A.EFIPath() != `\EFI\abboot\a.efi` || B.EntryName() != "abboot B" || A.Other() != B || B.Other() != A {
		t.Error("slot names are wrong")
	}
	if _, err := Parse("c"); err == nil {
		t.Error(`Parse("c") succeeded`)
	}
}
