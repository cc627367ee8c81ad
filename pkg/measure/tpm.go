package measure

import (
	"bytes"
	"crypto"
	"errors"
	"fmt"
	"os"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/abboot/abboot/pkg/uki"
)

// banks maps the TPM hash algorithms Extend can compute to Go's.
var banks = map[tpm2.TPMAlgID]crypto.Hash{
	tpm2.TPMAlgSHA1:   crypto.SHA1,
	tpm2.TPMAlgSHA256: crypto.SHA256,
	tpm2.TPMAlgSHA384: crypto.SHA384,
	tpm2.TPMAlgSHA512: crypto.SHA512,
}

// activeBanks returns the hash algorithms of the PCR banks that have PCR
// 11 allocated (TPM2_GetCapability(TPM_CAP_PCRS), TPM 2.0 Part 3 §30.2).
func activeBanks(t transport.TPM) ([]tpm2.TPMAlgID, error) {
	rsp, err := tpm2.GetCapability{Capability: tpm2.TPMCapPCRs, PropertyCount: 1}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("reading the PCR banks: %w", err)
	}
	sel, err := rsp.CapabilityData.Data.AssignedPCR()
	if err != nil {
		return nil, fmt.Errorf("reading the PCR banks: %w", err)
	}
	var algs []tpm2.TPMAlgID
	for _, s := range sel.PCRSelections {
		if len(s.PCRSelect) > PCR/8 && s.PCRSelect[PCR/8]&(1<<(PCR%8)) != 0 {
			algs = append(algs, s.Hash)
		}
	}
	return algs, nil
}

// Extend extends PCR 11 with events in every active bank, as systemd-stub
// does through EFI_TCG2_PROTOCOL.HashLogExtendEvent: one TPM2_PCR_Extend
// per event with the event's digest in each bank (TPM 2.0 Part 3 §22.2).
// A bank whose algorithm Extend cannot compute is an error before any
// extend, so that the banks never disagree on what was measured.
func Extend(t transport.TPM, events [][]byte) error {
	algs, err := activeBanks(t)
	if err != nil {
		return err
	}
	if len(algs) == 0 {
		return errors.New("no PCR bank has PCR 11")
	}
	for _, a := range algs {
		if _, ok := banks[a]; !ok {
			return fmt.Errorf("PCR bank with hash algorithm %#x not supported", a)
		}
	}
	for _, e := range events {
		var ds tpm2.TPMLDigestValues
		for _, a := range algs {
			h := banks[a].New()
			h.Write(e)
			ds.Digests = append(ds.Digests, tpm2.TPMTHA{HashAlg: a, Digest: h.Sum(nil)})
		}
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(PCR), Auth: tpm2.PasswordAuth(nil)},
			Digests:   ds,
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("extending PCR %d: %w", PCR, err)
		}
	}
	return nil
}

// Device is the kernel's TPM resource manager.
const Device = "/dev/tpmrm0"

// ErrNoTPM is returned by Handover on a machine without a TPM.
var ErrNoTPM = errors.New("no TPM")

// Handover extends PCR 11 through Device with the UKI b, which a kexec is
// about to start, as its stub would have on a firmware boot.
func Handover(b []byte) error {
	if _, err := os.Stat(Device); errors.Is(err, os.ErrNotExist) {
		return ErrNoTPM
	}
	img, err := uki.Read(bytes.NewReader(b))
	if err != nil {
		return err
	}
	t, err := linuxtpm.Open(Device)
	if err != nil {
		return err
	}
	defer t.Close()
	return Extend(t, Events(img))
}

// Read returns PCR 11 of the SHA-256 bank.
func Read(t transport.TPM) ([]byte, error) {
	rsp, err := tpm2.PCRRead{PCRSelectionIn: tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{
		Hash: tpm2.TPMAlgSHA256, PCRSelect: tpm2.PCClientCompatible.PCRs(PCR),
	}}}}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("reading PCR %d: %w", PCR, err)
	}
	if len(rsp.PCRValues.Digests) != 1 {
		return nil, fmt.Errorf("reading PCR %d: no SHA-256 bank", PCR)
	}
	return rsp.PCRValues.Digests[0].Buffer, nil
}
