// Package measure makes the measured boot survive abboot's kexec handover.
//
// When the firmware starts a UKI, systemd-stub extends TPM PCR 11 with the
// UKI's payload before it starts the kernel (systemd
// docs/TPM2_PCR_MEASUREMENTS.md): for each of the sections .linux, .osrel,
// .cmdline, .initrd, .splash, .dtb and .pcrpkey that is present and not
// empty, in that order, one extend with the section's name including its
// terminating NUL, then one with the section's content (systemd 252, the
// stub Debian 12 ships; later stubs add sections to the list). Each extend
// is PCR := H(PCR || H(data)) in every active bank.
//
// A kexec does not reset PCRs and does not run the target's stub, so after
// the init kexecs from slot A into slot B, PCR 11 would still describe A
// alone, as if A were running. Before the kexec the init therefore extends
// PCR 11 with B exactly as B's stub would have: Prepare hashes B's events
// in the TPM's active banks (the costly part, done while B is verified),
// Measurement.Extend sends the extends. PCR 11 then holds
// A's measurements followed by B's: it names B as the last payload, and it
// differs from the value of a firmware boot of B, because that value does
// not contain A. A policy sealed to a firmware boot of B thus does not
// unseal after a kexec into B, and vice versa; Predict computes both values
// from the UKIs alone, on the build machine (abimage pcr11).
//
// The package does not read or replay the firmware's event log, does not
// measure into other PCRs (4, 9 and 12 keep describing the firmware boot)
// and does not sign PCR policies.
package measure

import (
	"crypto"
	"crypto/sha256"
	"fmt"

	"github.com/abboot/abboot/pkg/uki"
)

// PCR is the PCR systemd-stub measures the UKI payload into
// (TPM_PCR_INDEX_KERNEL_IMAGE).
const PCR = 11

// sections is systemd 252's unified_sections order, without .pcrsig,
// which the stub does not measure (it holds signatures of the result).
var sections = []string{".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey"}

// Events returns the data systemd-stub extends PCR 11 with for img, in
// order: a section's name with a NUL, then its content.
func Events(img *uki.Image) [][]byte {
	var ev [][]byte
	for _, name := range sections {
		data := img.Sections[name]
		if len(data) == 0 {
			continue
		}
		ev = append(ev, append([]byte(name), 0), data)
	}
	return ev
}

// Fold folds events into a PCR value of bank h: PCR := H(PCR || H(e)).
func Fold(h crypto.Hash, pcr []byte, events [][]byte) []byte {
	for _, e := range events {
		d := h.New()
		d.Write(e)
		x := h.New()
		x.Write(pcr)
		x.Write(d.Sum(nil))
		pcr = x.Sum(nil)
	}
	return pcr
}

// Predict returns the SHA-256 PCR 11 after booting path[0] from the
// firmware and then kexec'ing into path[1], path[2], ... in turn, each
// handover measured by Extend. With one image it is the value systemd-stub
// leaves after a firmware boot.
func Predict(path ...*uki.Image) [sha256.Size]byte {
	pcr := make([]byte, sha256.Size) // PCR 11 is reset to zeros
	for _, img := range path {
		pcr = Fold(crypto.SHA256, pcr, Events(img))
	}
	return [sha256.Size]byte(pcr)
}

// ReadImage reads the sections Events measures from a UKI file.
func ReadImage(path string) (*uki.Image, error) {
	img, err := uki.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("measuring %s: %w", path, err)
	}
	return img, nil
}
