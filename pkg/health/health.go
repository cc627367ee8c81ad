// Package health asks a disk, over SMART (github.com/anatol/smart.go),
// whether it is failing before abctl writes an update to it. An NVMe disk
// is failing when its SMART / Health Information log has a critical
// warning (NVMe Base Specification 2.0, §5.16.1.3, byte 0); a SATA disk
// when a pre-failure attribute is at or below its threshold (ATA/ATAPI
// SMART, the rule smartctl reports as FAILING_NOW). Virtual and unknown
// disks have no SMART: they are reported as unsupported, not as healthy.
package health

import (
	"fmt"

	"github.com/anatol/smart.go"
)

// Report is a disk's health.
type Report struct {
	Type      string `json:"type,omitempty"` // nvme, sata, scsi, or "" when SMART is not supported
	Supported bool   `json:"supported"`
	Critical  bool   `json:"critical"`
	Reason    string `json:"reason,omitempty"` // why Critical, or why not Supported
}

// Check reads the health of the disk at dev.
func Check(dev string) Report {
	d, err := smart.Open(dev)
	if err != nil {
		return Report{Reason: fmt.Sprintf("no SMART on %s: %v", dev, err)}
	}
	defer d.Close()
	r := Report{Type: d.Type(), Supported: true}
	switch d := d.(type) {
	case *smart.NVMeDevice:
		log, err := d.ReadSMART()
		if err != nil {
			return Report{Type: r.Type, Reason: fmt.Sprintf("reading the NVMe health log of %s: %v", dev, err)}
		}
		r.Critical, r.Reason = nvme(log.CritWarning)
	case *smart.SataDevice:
		data, err := d.ReadSMARTData()
		if err != nil {
			return Report{Type: r.Type, Reason: fmt.Sprintf("reading SMART data of %s: %v", dev, err)}
		}
		th, err := d.ReadSMARTThresholds()
		if err != nil {
			return Report{Type: r.Type, Reason: fmt.Sprintf("reading SMART thresholds of %s: %v", dev, err)}
		}
		r.Critical, r.Reason = sata(data.Attrs, th.Thresholds)
	default:
		// SCSI: smart.go has no health data for it; say so rather than
		// report a disk healthy that nothing looked at.
		return Report{Type: r.Type, Reason: fmt.Sprintf("no SMART health data for %s disk %s", r.Type, dev)}
	}
	return r
}

// nvmeWarnings names the critical-warning bits (NVMe 2.0 Figure 207).
var nvmeWarnings = []string{
	"available spare below threshold",
	"temperature out of range",
	"reliability degraded",
	"media placed in read-only mode",
	"volatile memory backup failed",
	"persistent memory region read-only or unreliable",
}

func nvme(warning uint8) (bool, string) {
	for i, w := range nvmeWarnings {
		if warning&(1<<i) != 0 {
			return true, "NVMe critical warning: " + w
		}
	}
	return false, ""
}

// sata finds a pre-failure attribute at or below its threshold; a
// threshold of 0 means "never fails" and a value of 0 "not available".
func sata(attrs map[uint8]smart.AtaSmartAttr, thresholds map[uint8]uint8) (bool, string) {
	for id, a := range attrs {
		t, ok := thresholds[id]
		if a.Flags&smart.AtaAttributeFlagPrefailure != 0 && ok && t > 0 && a.Current > 0 && a.Current <= t {
			return true, fmt.Sprintf("SMART attribute %d (%s) is %d, at or below its failure threshold %d", id, a.Name, a.Current, t)
		}
	}
	return false, ""
}
