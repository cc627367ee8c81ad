package health

import (
	"testing"

	"github.com/anatol/smart.go"
)

func TestNVMe(t *testing.T) {
	for _, tc := range []struct {
		warning  uint8
		critical bool
	}{{0, false}, {1, true}, {0x08, true}, {0x40, false}} {
		if c, why := nvme(tc.warning); c != tc.critical || c && why == "" {
			t.Errorf("nvme(%#x) = %v %q, want %v", tc.warning, c, why, tc.critical)
		}
	}
}

func TestSATA(t *testing.T) {
	pre := uint16(smart.AtaAttributeFlagPrefailure)
	for _, tc := range []struct {
		name     string
		attr     smart.AtaSmartAttr
		th       uint8
		critical bool
	}{
		{"healthy", smart.AtaSmartAttr{Id: 5, Flags: pre, Current: 100}, 36, false},
		{"failing reallocated sectors", smart.AtaSmartAttr{Id: 5, Flags: pre, Current: 36}, 36, true},
		{"old-age attribute never fails the disk", smart.AtaSmartAttr{Id: 194, Current: 10}, 20, false},
		{"threshold 0 never fails", smart.AtaSmartAttr{Id: 9, Flags: pre, Current: 1}, 0, false},
	} {
		c, _ := sata(map[uint8]smart.AtaSmartAttr{tc.attr.Id: tc.attr}, map[uint8]uint8{tc.attr.Id: tc.th})
		if c != tc.critical {
			t.Errorf("%s: critical %v, want %v", tc.name, c, tc.critical)
		}
	}
}

func TestUnsupported(t *testing.T) {
	if r := Check("/dev/null"); r.Supported || r.Critical || r.Reason == "" {
		t.Errorf("Check(/dev/null) = %+v, want unsupported with a reason", r)
	}
}
