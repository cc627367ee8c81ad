package measure

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

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
	ds, err := Hash(context.Background(), algs, events, nil)
	if err != nil {
		return err
	}
	return extend(t, ds)
}

// Hash returns each event's digest in each bank of algs, which must not be
// empty. The banks are hashed at once, one goroutine each: hashing a UKI
// is nearly all of a measurement's time, and a bank's digests depend on
// no other bank's. With cpus not nil, a bank is hashed only while its
// goroutine holds one of the tokens in cpus (received, then sent back), so
// that a caller can keep CPUs for other work meanwhile. Cancelling ctx
// stops the hashing within a chunk and returns ctx's error.
func Hash(ctx context.Context, algs []tpm2.TPMAlgID, events [][]byte, cpus chan struct{}) ([]tpm2.TPMLDigestValues, error) {
	if len(algs) == 0 {
		return nil, errors.New("no PCR bank has PCR 11")
	}
	for _, a := range algs {
		if _, ok := banks[a]; !ok {
			return nil, fmt.Errorf("PCR bank with hash algorithm %#x not supported", a)
		}
	}
	ds := make([]tpm2.TPMLDigestValues, len(events))
	for i := range ds {
		ds[i].Digests = make([]tpm2.TPMTHA, len(algs))
	}
	var wg sync.WaitGroup
	for j, a := range algs {
		wg.Go(func() {
			if cpus != nil {
				select {
				case <-cpus:
				case <-ctx.Done():
					return
				}
				defer func() { cpus <- struct{}{} }()
			}
			for i, e := range events {
				h := banks[a].New()
				for len(e) > 0 && ctx.Err() == nil {
					n := min(len(e), hashChunk)
					h.Write(e[:n])
					e = e[n:]
				}
				ds[i].Digests[j] = tpm2.TPMTHA{HashAlg: a, Digest: h.Sum(nil)}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return ds, nil
}

// hashChunk is how much Hash hashes between two looks at its context:
// about 30 ms of SHA-256 under TCG, well under 1 ms on hardware.
const hashChunk = 1 << 20

// extend extends PCR 11 with each event's digests, one TPM2_PCR_Extend per
// event, in order.
func extend(t transport.TPM, ds []tpm2.TPMLDigestValues) error {
	for _, d := range ds {
		_, err := tpm2.PCRExtend{
			PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(PCR), Auth: tpm2.PasswordAuth(nil)},
			Digests:   d,
		}.Execute(t)
		if err != nil {
			return fmt.Errorf("extending PCR %d: %w", PCR, err)
		}
	}
	return nil
}

// Device is the kernel's TPM resource manager.
const Device = "/dev/tpmrm0"

// ErrNoTPM is returned by Prepare on a machine without a TPM.
var ErrNoTPM = errors.New("no TPM")

// Measurement is a UKI's PCR 11 events hashed for the TPM's active banks,
// ready to be extended. Preparing it is the costly part (every active bank
// hashes the whole payload); extending is a few TPM commands. The init
// prepares it while it verifies the UKI, and extends right before the
// kexec.
type Measurement struct {
	Banks   []tpm2.TPMAlgID // the active banks, in the TPM's order
	digests []tpm2.TPMLDigestValues
}

// Prepare hashes the UKI b, which a kexec is about to start, for the
// active banks of the TPM at Device, as its stub would on a firmware boot,
// on as many CPUs as cpus holds tokens (Hash), until ctx is cancelled.
// It returns ErrNoTPM without a TPM.
func Prepare(ctx context.Context, b []byte, cpus chan struct{}) (*Measurement, error) {
	if _, err := os.Stat(Device); errors.Is(err, os.ErrNotExist) {
		return nil, ErrNoTPM
	}
	img, err := uki.Parse(b)
	if err != nil {
		return nil, err
	}
	t, err := linuxtpm.Open(Device)
	if err != nil {
		return nil, err
	}
	algs, err := activeBanks(t)
	t.Close()
	if err != nil {
		return nil, err
	}
	ds, err := Hash(ctx, algs, Events(img), cpus)
	if err != nil {
		return nil, err
	}
	return &Measurement{Banks: algs, digests: ds}, nil
}

// Extend extends PCR 11 with m through Device.
func (m *Measurement) Extend() error {
	t, err := linuxtpm.Open(Device)
	if err != nil {
		return err
	}
	defer t.Close()
	return extend(t, m.digests)
}

// BankNames names m's banks for a log line: "sha1,sha256".
func (m *Measurement) BankNames() string {
	var s []string
	for _, a := range m.Banks {
		s = append(s, bankName(a))
	}
	return strings.Join(s, ",")
}

// ParseBanks is the inverse of BankNames.
func ParseBanks(names string) ([]tpm2.TPMAlgID, error) {
	var algs []tpm2.TPMAlgID
next:
	for _, n := range strings.Split(names, ",") {
		for a := range banks {
			if bankName(a) == n {
				algs = append(algs, a)
				continue next
			}
		}
		return nil, fmt.Errorf("unknown PCR bank %q", n)
	}
	return algs, nil
}

// bankName is a bank's name as Linux's sysfs spells it
// (/sys/class/tpm/tpm0/pcr-sha256): "SHA-256" as "sha256".
func bankName(a tpm2.TPMAlgID) string {
	return strings.ToLower(strings.ReplaceAll(banks[a].String(), "-", ""))
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
