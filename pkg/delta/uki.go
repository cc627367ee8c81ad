package delta

import (
	"cmp"
	"crypto/sha256"
	"debug/pe"
	"encoding/hex"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/abboot/abboot/pkg/bundle"
)

// The UKI is a PE image (UEFI 2.10 §2.1.1, PE/COFF): headers, then the
// stub's small sections and the big ones a UKI adds, .linux (the kernel)
// and .initrd, which an update of the root alone leaves as they were. So
// a UKI is fetched by section: its headers first, then each section
// unless a UKI already on the device (Options.UKIs) has a section of the
// same name and size, which is taken from there instead but for its
// first and last bytes (ukiEnds). The bundle's manifest has one digest
// for the whole UKI, none per section (a new manifest field would be
// refused by older devices), so that taking a section is a guess,
// checked by the whole UKI's sha256: if it does not match, the sections
// taken are fetched, the smallest first, until it does. A kernel of the
// same size is the same kernel in practice, so the guess is rarely wrong,
// and a wrong one costs a round trip and that section.

// ukiHeaderFetch is how much of the UKI's start is fetched for its
// headers: the stub's SizeOfHeaders is 1 KiB or less.
const ukiHeaderFetch = 4096

// minSectionTake is the smallest section taken from a UKI on the device:
// below it, a guess saves little and the small sections (the command
// line, whose root hash has the same length in every version) are the
// ones that change.
const minSectionTake = 64 << 10

// ukiEnds is how many bytes at each end of a section taken are fetched
// all the same.
const ukiEnds = 4096

// ukiSeed is a UKI on the device, its sections read from its headers.
type ukiSeed struct {
	r        io.ReaderAt
	sections []*pe.Section
}

// ukiSeeds parses Options.UKIs once; one that is not a PE image is left
// out.
func (s *Source) ukiSeeds() []ukiSeed {
	s.ukiOnce.Do(func() {
		for _, r := range s.o.UKIs {
			if f, err := pe.NewFile(r); err == nil {
				s.ukis = append(s.ukis, ukiSeed{r, f.Sections})
			}
		}
	})
	return s.ukis
}

// take fills b, the new UKI's section name, from a UKI on the device that
// has a section of that name and of b's size.
func (s *Source) take(name string, b []byte) bool {
	for _, u := range s.ukiSeeds() {
		for _, sec := range u.sections {
			if sec.Name == name && int64(sec.Size) == int64(len(b)) {
				if n, err := u.r.ReadAt(b, int64(sec.Offset)); n == len(b) && (err == nil || err == io.EOF) {
					return true
				}
			}
		}
	}
	return false
}

// fetchUKI returns the n-byte UKI payload at off in the bundle, whose
// sha256 is sum (hex), fetched by section; see above. Its bytes taken
// from the device count as reused.
func (s *Source) fetchUKI(off, n int64, sum string) ([]byte, error) {
	hdr, _, err := s.fetchRange(off, min(n, ukiHeaderFetch))
	if err != nil {
		return nil, err
	}
	b := make([]byte, n)
	copy(b, hdr)
	var taken [][2]int64
	for _, sec := range bigSections(hdr, n) {
		at, end := int64(sec.Offset), int64(sec.Offset)+int64(sec.Size)
		if s.take(sec.Name, b[at:end]) {
			taken = append(taken, [2]int64{at, end})
		}
	}
	// The first and last bytes of a section taken are fetched all the
	// same: they are what a rebuild changes most (an initramfs's first
	// files, which hold its version: 2 bytes of the Debian image's in
	// its first KiB), and they cost a request each.
	fetch := between(taken, int64(len(hdr)), n)
	for _, t := range taken {
		fetch = append(fetch, [2]int64{t[0], t[0] + ukiEnds}, [2]int64{t[1] - ukiEnds, t[1]})
	}
	if err := s.fetchInto(b, off, fetch); err != nil {
		return nil, err
	}
	// A guess that is wrong all the same: the sections taken are
	// fetched, the smallest first, until the UKI matches.
	slices.SortFunc(taken, func(x, y [2]int64) int { return cmp.Compare(x[1]-x[0], y[1]-y[0]) })
	for !hasSum(b, sum) {
		if len(taken) == 0 {
			return nil, fmt.Errorf("delta: the fetched UKI does not match the manifest: %w", bundle.ErrHashMismatch)
		}
		s.log("step", "uki", "result", "mismatch", "action", "fetch", "bytes", taken[0][1]-taken[0][0])
		if err := s.fetchInto(b, off, taken[:1]); err != nil {
			return nil, err
		}
		taken = taken[1:]
	}
	var reused int64
	for _, t := range taken {
		reused += t[1] - t[0] - 2*ukiEnds
	}
	s.reused.Add(reused)
	s.log("step", "uki", "bytes", n, "reused_bytes", reused, "sections_taken", len(taken))
	return b, nil
}

// bigSections returns the sections worth taking from a UKI on the device
// of the n-byte UKI whose first bytes are hdr: of minSectionTake bytes at
// least, past hdr and inside the UKI, in file order and apart (a section
// that overlaps the one before is left out: hdr is not checked yet, it
// may say anything).
func bigSections(hdr []byte, n int64) []*pe.Section {
	f, err := pe.NewFile(headers{hdr, n})
	if err != nil {
		return nil
	}
	var big []*pe.Section
	for _, sec := range f.Sections {
		if at, size := int64(sec.Offset), int64(sec.Size); size >= minSectionTake && at >= int64(len(hdr)) && at+size <= n {
			big = append(big, sec)
		}
	}
	slices.SortFunc(big, func(x, y *pe.Section) int { return cmp.Compare(x.Offset, y.Offset) })
	var apart []*pe.Section
	for _, sec := range big {
		if k := len(apart); k == 0 || int64(apart[k-1].Offset)+int64(apart[k-1].Size) <= int64(sec.Offset) {
			apart = append(apart, sec)
		}
	}
	return apart
}

// between returns the parts of [from, to) that ranges, in order and
// apart, leave out.
func between(ranges [][2]int64, from, to int64) [][2]int64 {
	var out [][2]int64
	for _, r := range append(ranges, [2]int64{to, to}) {
		if r[0] > from {
			out = append(out, [2]int64{from, r[0]})
		}
		from = max(from, r[1])
	}
	return out
}

// fetchInto fetches the ranges of b, the bundle's bytes from off, at
// once: they are few (a UKI's headers and small sections, its command
// line, and its signature at the end).
func (s *Source) fetchInto(b []byte, off int64, ranges [][2]int64) error {
	var wg sync.WaitGroup
	errs := make([]error, len(ranges))
	for i, r := range ranges {
		wg.Go(func() {
			got, _, err := s.fetchRange(off+r[0], r[1]-r[0])
			if err == nil && int64(len(got)) != r[1]-r[0] {
				err = fmt.Errorf("fetching bytes %d to %d of the UKI: got %d", r[0], r[1], len(got))
			}
			copy(b[r[0]:r[1]], got)
			errs[i] = err
		})
	}
	wg.Wait()
	return cmp.Or(errs...)
}

// headers is a PE image of size bytes of which only the first are known,
// the rest read as zeros: debug/pe also reads the COFF symbol and string
// tables, which the stub keeps a pointer to past its headers, but they
// only name sections of more than 8 bytes, and a UKI's are not.
type headers struct {
	b    []byte
	size int64
}

func (h headers) ReadAt(p []byte, off int64) (int, error) {
	if off >= h.size {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), h.size-off))
	clear(p[:n])
	if off < int64(len(h.b)) {
		copy(p[:n], h.b[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func hasSum(b []byte, sum string) bool {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]) == sum
}
