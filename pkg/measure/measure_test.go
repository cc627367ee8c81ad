package measure

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/abboot/abboot/pkg/uki"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
)

// testUKI builds a UKI with random .linux and .initrd contents and
// returns it with the files it was built from.
func testUKI(t *testing.T, cmdline, osrel string) (img *uki.Image, files map[string]string) {
	t.Helper()
	if _, err := os.Stat(uki.DefaultStub); err != nil {
		t.Skipf("no UEFI stub: apt-get install systemd-boot-efi (%v)", err)
	}
	dir := t.TempDir()
	files = map[string]string{}
	for name, size := range map[string]int{"linux": 100_000, "initrd": 5000} {
		b := make([]byte, size)
		rand.Read(b)
		files[name] = filepath.Join(dir, name)
		os.WriteFile(files[name], b, 0o644)
	}
	for name, text := range map[string]string{"cmdline": cmdline, "osrel": osrel} {
		files[name] = filepath.Join(dir, name)
		os.WriteFile(files[name], []byte(text), 0o644)
	}
	out := filepath.Join(dir, "uki.efi")
	if err := uki.Build(uki.Spec{Kernel: files["linux"], Initrd: files["initrd"], Cmdline: cmdline, OSRel: osrel}, out); err != nil {
		t.Fatal(err)
	}
	img, err := ReadImage(out)
	if err != nil {
		t.Fatal(err)
	}
	return img, files
}

// TestPredictSystemdMeasure checks Predict of a firmware boot against
// systemd's own calculator, systemd-measure (interop), with no boot phase.
func TestPredictSystemdMeasure(t *testing.T) {
	const tool = "/usr/lib/systemd/systemd-measure"
	if _, err := os.Stat(tool); err != nil {
		t.Skipf("%s: %v", tool, err)
	}
	img, f := testUKI(t, "console=ttyS0 abboot.roothash=x", "ID=abboot\nVERSION_ID=1\n")
	out, err := exec.Command(tool, "calculate", "--bank=sha256", "--phase=",
		"--linux="+f["linux"], "--initrd="+f["initrd"], "--cmdline="+f["cmdline"], "--osrel="+f["osrel"]).CombinedOutput()
	if err != nil {
		t.Fatalf("systemd-measure: %v\n%s", err, out)
	}
	got := Predict(img)
	want := "11:sha256=" + hex.EncodeToString(got[:])
	if !strings.Contains(string(out), want) {
		t.Errorf("Predict = %x; systemd-measure says\n%s", got, out)
	}
}

// swtpm starts a software TPM for the test and returns a transport to it.
func swtpm(t *testing.T) transport.TPM {
	t.Helper()
	if _, err := exec.LookPath("swtpm"); err != nil {
		t.Skip("swtpm not installed (apt-get install swtpm swtpm-tools)")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "tpm.sock")
	cmd := exec.Command("swtpm", "socket", "--tpm2", "--tpmstate", "dir="+dir,
		"--server", "type=unixio,path="+sock, "--ctrl", "type=unixio,path="+sock+".ctrl",
		"--flags", "not-need-init,startup-clear")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var conn net.Conn
	var err error
	for range 100 { // swtpm creates the socket after its start
		if conn, err = net.Dial("unix", sock); err == nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connecting to swtpm: %v\n%s", err, stderr.String())
	}
	t.Cleanup(func() { conn.Close() })
	return rawTPM{conn}
}

// rawTPM sends TPM commands over swtpm's socket, which carries them as
// they are: a command, then a response whose header gives its size.
type rawTPM struct{ c net.Conn }

func (r rawTPM) Send(cmd []byte) ([]byte, error) {
	if _, err := r.c.Write(cmd); err != nil {
		return nil, err
	}
	hdr := make([]byte, 10)
	if _, err := io.ReadFull(r.c, hdr); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(hdr[2:])
	if n < 10 {
		return nil, fmt.Errorf("response size %d", n)
	}
	rsp := make([]byte, n)
	copy(rsp, hdr)
	_, err := io.ReadFull(r.c, rsp[10:])
	return rsp, err
}

// TestExtendSwtpm extends a software TPM as the init does for a firmware
// boot of A and a kexec into B, and checks PCR 11 against Predict each
// time; the handover value differs from a firmware boot of B.
func TestExtendSwtpm(t *testing.T) {
	a, _ := testUKI(t, "console=ttyS0 a", "VERSION_ID=1\n")
	b, _ := testUKI(t, "console=ttyS0 b", "VERSION_ID=2\n")
	tpm := swtpm(t)
	for i, step := range []struct {
		img  *uki.Image
		want [32]byte
	}{
		{a, Predict(a)},
		{b, Predict(a, b)},
	} {
		if err := Extend(tpm, Events(step.img)); err != nil {
			t.Fatal(err)
		}
		got, err := Read(tpm)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, step.want[:]) {
			t.Errorf("step %d: PCR 11 = %x, predicted %x", i, got, step.want)
		}
	}
	if Predict(a, b) == Predict(b) {
		t.Error("a kexec into B predicts the same PCR 11 as a firmware boot of B")
	}
}

// TestHash: each bank's digests are its hash of each event, in order,
// whatever the set of banks; banks name themselves as sysfs does, and an
// unknown or empty set is an error.
func TestHash(t *testing.T) {
	events := [][]byte{[]byte(".linux\x00"), bytes.Repeat([]byte("k"), 100_000), []byte(".cmdline\x00"), []byte("quiet")}
	for _, tc := range []struct {
		names string
		want  []crypto.Hash
	}{
		{"sha256", []crypto.Hash{crypto.SHA256}},
		{"sha1,sha256", []crypto.Hash{crypto.SHA1, crypto.SHA256}},
		{"sha1,sha256,sha384,sha512", []crypto.Hash{crypto.SHA1, crypto.SHA256, crypto.SHA384, crypto.SHA512}},
	} {
		t.Run(tc.names, func(t *testing.T) {
			algs, err := ParseBanks(tc.names)
			if err != nil {
				t.Fatal(err)
			}
			if got := (&Measurement{Banks: algs}).BankNames(); got != tc.names {
				t.Errorf("BankNames = %q, want %q", got, tc.names)
			}
			// One CPU token: the banks take turns.
			cpus := make(chan struct{}, 1)
			cpus <- struct{}{}
			ds, err := Hash(context.Background(), algs, events, cpus)
			if err != nil {
				t.Fatal(err)
			}
			if len(cpus) != 1 {
				t.Errorf("Hash kept its CPU token")
			}
			if len(ds) != len(events) {
				t.Fatalf("%d digest sets for %d events", len(ds), len(events))
			}
			for i, e := range events {
				for j, h := range tc.want {
					d := h.New()
					d.Write(e)
					if got := ds[i].Digests[j]; got.HashAlg != algs[j] || !bytes.Equal(got.Digest, d.Sum(nil)) {
						t.Errorf("event %d, bank %v: %x, want %x", i, h, got.Digest, d.Sum(nil))
					}
				}
			}
		})
	}
	if _, err := ParseBanks("sha256,md5"); err == nil {
		t.Error("ParseBanks accepted md5")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cpus := make(chan struct{}, 1)
	cpus <- struct{}{}
	if _, err := Hash(ctx, []tpm2.TPMAlgID{tpm2.TPMAlgSHA256}, events, cpus); !errors.Is(err, context.Canceled) || len(cpus) != 1 {
		t.Errorf("Hash, cancelled: %v, %d CPU tokens left; want context.Canceled, 1", err, len(cpus))
	}
	if _, err := Hash(context.Background(), nil, events, nil); err == nil {
		t.Error("Hash with no bank succeeded")
	}
	if _, err := Hash(context.Background(), []tpm2.TPMAlgID{tpm2.TPMAlgSM3256}, events, nil); err == nil {
		t.Error("Hash in an SM3 bank succeeded")
	}
}
