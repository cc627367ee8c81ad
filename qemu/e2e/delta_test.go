package e2e

import (
	"bytes"
	"crypto/ed25519"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/abboot/abboot/internal/demodisk"
	"github.com/abboot/abboot/pkg/bundle"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/tool"
	"github.com/abboot/abboot/qemu"
)

// bundleServer is the update server: it serves a directory on the host's
// loopback, with Range support (http.FileServer), and corrupts the first
// range it serves that starts in [from, to), one byte of it.
type bundleServer struct {
	h        http.Handler
	from, to int64
	spoiled  atomic.Bool
}

func (s *bundleServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var off int64
	if _, err := fmt.Sscanf(r.Header.Get("Range"), "bytes=%d-", &off); err == nil && off >= s.from && off < s.to && s.spoiled.CompareAndSwap(false, true) {
		w = &spoilingWriter{ResponseWriter: w}
	}
	s.h.ServeHTTP(w, r)
}

// spoilingWriter inverts the first byte of the body it writes.
type spoilingWriter struct {
	http.ResponseWriter
	done bool
}

func (w *spoilingWriter) Write(b []byte) (int, error) {
	if !w.done && len(b) > 0 {
		b = bytes.Clone(b)
		b[0] ^= 0xff
		w.done = true
	}
	return w.ResponseWriter.Write(b)
}

// payloadSpan returns where a bundle's payload lies in it, in bytes.
func payloadSpan(t *testing.T, abb, name string) (off, size int64) {
	t.Helper()
	key, err := bundle.LoadPrivateKey(demodisk.Key())
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(abb)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, err := bundle.NewReader(f, bundle.Keyring{key.Public().(ed25519.PublicKey)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(r.Manifest.Payloads, func(p bundle.Payload) bool { return p.Name == name })
	if i < 0 {
		t.Fatalf("%s has no %s payload", abb, name)
	}
	return r.Offset(i), r.Manifest.Payloads[i].Size
}

// TestDebianDeltaUpdate is issue 14's update on a real OS: the Debian
// root v1 in slot A installs v2 over HTTP from the host by delta (the
// guest's only network: a restricted NIC whose one forwarded address is
// the update server), copying the blocks slot A has and fetching the rest
// by range, then reboots into v2 (kexec), which commits. The server
// spoils one range of the root: the guest refuses it and fetches it
// again, and nothing unverified is written (the install reads the slot
// back against the signed root hash, and v2 boots through dm-verity).
// A second update, v3 into slot A, which still holds v1, leaves the
// blocks v1 and v3 share in place, unwritten: the real veritysetup then
// checks slot A on the host, every block against v3's root hash.
func TestDebianDeltaUpdate(t *testing.T) {
	debianImages(t)
	dir := debianBundleFiles(t, "v2", "v3")
	abb := filepath.Join(dir, "v2.abb")
	rootOff, rootSize := payloadSpan(t, abb, bundle.PayloadRoot)
	srv := httptest.NewServer(&bundleServer{h: http.FileServer(http.Dir(dir)), from: rootOff, to: rootOff + rootSize})
	defer srv.Close()
	ukiSize := fileSize(t, debianUKI["v2"])

	m := newMachine(t, debianDisk(t))
	m.forwards = []qemu.Forward{{Guest: "10.0.2.100:80", Host: srv.Listener.Addr().String()}}
	vm := debianStart(m)
	upOn(t, vm, "a", "1")
	network(t, vm)

	vm.Send("abctl install --reboot=kexec http://10.0.2.100/v2.abb\r")
	debianExpect(t, vm, `abboot: event=delta step=plan mode=delta `)
	debianExpect(t, vm, `abboot: event=delta step=fetch block=\d+ result=mismatch try=0`)
	got := debianExpect(t, vm, `abboot: event=install slot=b version=2 .*mode=(\w+) fetched_bytes=(\d+) reused_bytes=(\d+) in_place_bytes=\d+ requests=(\d+) result=ok`)
	fetched, _ := strconv.ParseInt(got[2], 10, 64)
	reused, _ := strconv.ParseInt(got[3], 10, 64)
	t.Logf("delta install: root %d bytes, UKI %d bytes; fetched %d bytes in %s requests, reused %d", rootSize, ukiSize, fetched, got[4], reused)
	// Of the root and its tree, v2 (one more package) needs a few
	// percent (bench/delta.sh: 1.7%); of the UKI, whose kernel and
	// initramfs are v1's but for its version, little but the headers,
	// the command line and os-release.
	if got[1] != "delta" || fetched > rootSize/20+ukiSize/10 || reused < rootSize*9/10 {
		t.Errorf("install mode %s fetched %d bytes and reused %d of the root's %d and the UKI's %d: want a delta fetching at most 5%% of the root and 10%% of the UKI, reusing 90%% of the root",
			got[1], fetched, reused, rootSize, ukiSize)
	}
	debianExpect(t, vm, `abboot: event=reboot slot=b action=kexec`)
	upOn(t, vm, "b", "2")
	committedAfterBootComplete(t, vm)
	if st := debianStatus(t, vm); st.Slots[1].Condition != "committed" {
		t.Errorf("slot B after the update: %+v, want committed", st.Slots[1])
	}

	network(t, vm)
	vm.Send("abctl install http://10.0.2.100/v3.abb\r")
	got = debianExpect(t, vm, `abboot: event=install slot=a version=3 .*mode=(\w+) fetched_bytes=\d+ reused_bytes=\d+ in_place_bytes=(\d+) .*result=ok`)
	inPlace, _ := strconv.ParseInt(got[2], 10, 64)
	t.Logf("delta install of v3 into slot A (v1): %d bytes in place", inPlace)
	if got[1] != "delta" || inPlace < rootSize/8 {
		t.Errorf("install mode %s with %d bytes in place: want a delta leaving at least an eighth of the root's %d bytes in place", got[1], inPlace, rootSize)
	}
	debianPoweroff(t, vm)
	verifySlot(t, m.disks[0], "a", debianRootHash(t, "v3"))
}

// network brings the guest's NIC up with a static address
// (systemd-networkd, configured in /run: the image itself has no network
// configuration, and /run is gone after a reboot).
func network(t *testing.T, vm *qemu.VM) {
	t.Helper()
	sh(t, vm, `mkdir -p /run/systemd/network && printf '[Match]\nType=ether\n\n[Network]\nAddress=10.0.2.15/24\n' >/run/systemd/network/50-e2e.network`)
	sh(t, vm, "systemctl start systemd-networkd && /lib/systemd/systemd-networkd-wait-online --timeout=120")
}

// verifySlot runs veritysetup verify on a slot's root and verity
// partitions of disk, copied out, against rootHash.
func verifySlot(t *testing.T, disk, s, rootHash string) {
	t.Helper()
	tab, err := gpt.ReadFile(disk)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(disk)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var parts []string
	for _, label := range []string{"abboot-root-" + s, "abboot-verity-" + s} {
		p, ok := tab.ByName(label)
		if !ok {
			t.Fatalf("%s has no partition %s", disk, label)
		}
		out := filepath.Join(t.TempDir(), label)
		o, err := os.Create(out)
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(o, io.NewSectionReader(f, p.Start(tab.SectorSize), p.Size(tab.SectorSize)))
		if cerr := o.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		parts = append(parts, out)
	}
	if out, err := tool.Run("veritysetup", "verify", parts[0], parts[1], rootHash); err != nil {
		t.Fatalf("veritysetup verify of slot %s: %v: %s", s, err, out)
	}
}

func fileSize(t *testing.T, p string) int64 {
	t.Helper()
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}
