package main

import (
	"bytes"
	"errors"
	"os"
	"time"

	"github.com/google/go-tpm/tpm2/transport/linuxtpm"

	"github.com/abboot/abboot/bootcheck"
	"github.com/abboot/abboot/pkg/event"
	"github.com/abboot/abboot/pkg/handover"
	"github.com/abboot/abboot/pkg/measure"
	"github.com/abboot/abboot/pkg/uki"
)

// tpmDevice is the kernel's TPM resource manager.
const tpmDevice = "/dev/tpmrm0"

// measureHandover extends PCR 11 with the UKI a kexec is about to start,
// as its stub would have on a firmware boot (pkg/measure), so that after
// the kexec PCR 11 no longer describes this slot alone. It runs last
// before the kexec: a plan that falls back to a firmware reboot resets the
// PCRs anyway. Without a TPM there is nothing to do; a failure is logged
// and the kexec goes on, PCR 11 then matching no prediction.
func measureHandover(p *handover.Plan) {
	if p.Decision.Action != bootcheck.Kexec || p.Image == nil {
		return
	}
	if _, err := os.Stat(tpmDevice); errors.Is(err, os.ErrNotExist) {
		return
	}
	start := time.Now()
	err := func() error {
		img, err := uki.Read(bytes.NewReader(p.Image))
		if err != nil {
			return err
		}
		t, err := linuxtpm.Open(tpmDevice)
		if err != nil {
			return err
		}
		defer t.Close()
		return measure.Extend(t, measure.Events(img))
	}()
	if err != nil {
		event.Error("measure", err, "slot", p.Decision.Target, "pcr", measure.PCR)
		return
	}
	event.Log("measure", "slot", p.Decision.Target, "pcr", measure.PCR, "ms", time.Since(start).Milliseconds(), "result", "ok")
}
