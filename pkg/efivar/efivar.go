// Package efivar reads and writes UEFI variables through Linux efivarfs or
// through a plain directory laid out like it, and encodes the boot manager's
// variables: EFI_LOAD_OPTION (UEFI 2.10 §3.1.3), the device paths inside them
// (§10.3) and Boot####, BootOrder, BootNext and BootCurrent (§3.3).
//
// Each variable is a file named Name-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx
// holding a 4-byte little-endian attributes word followed by the data, which
// is what /sys/firmware/efi/efivars shows (Documentation/filesystems/efivarfs.rst).
//
// The package does not talk to firmware by any other route (no legacy sysfs
// efivars, no authenticated variables, no EFI_VARIABLE_APPEND_WRITE emulation
// on plain directories), and its device path codec knows only the nodes
// abboot writes; every other node is kept byte for byte.
package efivar

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/abboot/abboot/pkg/atomicfile"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/foxboron/go-uefi/efi/attr"
	"github.com/foxboron/go-uefi/efi/attributes"
	"github.com/foxboron/go-uefi/efi/util"
	"github.com/foxboron/go-uefi/efivarfs/fswrapper"
	"github.com/spf13/afero"
)

// GlobalVariable is EFI_GLOBAL_VARIABLE, the vendor GUID of the boot
// manager's variables (UEFI 2.10 §3.3).
var GlobalVariable = guid.MustParse("8be4df61-93ca-11d2-aa0d-00e098032b8c")

// Variable attributes, UEFI 2.10 §8.2.1 (GetVariable).
const (
	AttrNonVolatile       = 0x1
	AttrBootserviceAccess = 0x2
	AttrRuntimeAccess     = 0x4
)

var (
	// ErrNotFound is returned (wrapped) for a variable that does not exist.
	ErrNotFound = errors.New("EFI variable not found")
	// ErrNoSpace is returned (wrapped) when the firmware refuses a write for
	// lack of NVRAM: efivarfs maps EFI_OUT_OF_RESOURCES to ENOSPC.
	ErrNoSpace = errors.New("EFI variable storage is full")
	// ErrMalformed is returned (wrapped) when a variable's content does not
	// decode, so a caller can tell a broken entry from an I/O failure.
	ErrMalformed = errors.New("malformed EFI variable")
)

// Vars is a set of EFI variables: the live efivarfs or a plain directory.
type Vars struct {
	// fs holds the variables at its root, as "/Name-GUID".
	fs afero.Fs
	// efi is non-nil when fs is efivarfs at attributes.Efivars. Writes then
	// go through go-uefi's FSWrapper.WriteEfivarsWithGuid, which clears the
	// immutable flag and writes attributes and data in one write(2) without
	// O_TRUNC, as libefivar does. A plain directory cannot use it: that
	// writer is bound to the global path attributes.Efivars, and since it
	// neither truncates nor renames, a shorter value would leave the tail of
	// the old one behind and a crash would leave a torn file.
	efi *fswrapper.FSWrapper
	// chattr is set when deletes must clear, through the real path, the
	// immutable flag that efivarfs sets on variables it does not know to
	// be safe to remove (chattr -i).
	chattr bool
}

// Open returns the variables in dir. dir "" (or /sys/firmware/efi/efivars
// itself) is the live efivarfs; any other dir is a plain directory of files
// in efivarfs format, written atomically by temp file and rename. An efivarfs
// mounted somewhere else is not supported: it rejects the temp file, so
// writes there fail without changing anything. Reading never writes.
func Open(dir string) *Vars {
	if dir == "" || filepath.Clean(dir) == attributes.Efivars {
		return openEfivarfs(afero.NewOsFs(), true)
	}
	return OpenFS(afero.NewBasePathFs(afero.NewOsFs(), dir))
}

// openEfivarfs returns the efivarfs at attributes.Efivars in root. chattr
// is false for tests, which run it over an afero.MemMapFs exactly as
// go-uefi's testfs does.
func openEfivarfs(root afero.Fs, chattr bool) *Vars {
	w := &fswrapper.FSWrapper{}
	w.SetFS(root)
	if chattr {
		w.CheckImmutable()
		w.UnsetImmutable()
	}
	return &Vars{
		fs:     afero.NewBasePathFs(root, attributes.Efivars),
		efi:    w,
		chattr: chattr,
	}
}

// OpenFS returns the variables at the root of fs, with plain-directory
// semantics: Set replaces the variable's file with atomicfile.WriteFile. It is the fault-injection hook for tests: wrap fs to fail
// OpenFile, Write, Sync or Rename (for example with ENOSPC, or a power cut
// between the temp write and the rename) and the variable keeps its old
// value. Use afero.NewBasePathFs to point it at a subdirectory.
func OpenFS(fs afero.Fs) *Vars {
	return &Vars{fs: fs}
}

// fileName is the efivarfs file name of a variable.
func fileName(name string, vendor guid.GUID) (string, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") {
		return "", fmt.Errorf("invalid EFI variable name %q", name)
	}
	return name + "-" + vendor.String(), nil
}

// Get returns a variable's attributes and data. A missing variable gives an
// error wrapping ErrNotFound.
func (v *Vars) Get(name string, vendor guid.GUID) (attrs uint32, data []byte, err error) {
	file, err := fileName(name, vendor)
	if err != nil {
		return 0, nil, err
	}
	b, err := afero.ReadFile(v.fs, "/"+file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return 0, nil, fmt.Errorf("reading %s: %w", file, ErrNotFound)
	case err != nil:
		return 0, nil, fmt.Errorf("reading %s: %w", file, err)
	case len(b) == 0:
		// efivarfs shows a file that was created but whose first write
		// failed as an empty file; there is no variable behind it.
		return 0, nil, fmt.Errorf("reading %s: empty file: %w", file, ErrNotFound)
	case len(b) < 4:
		return 0, nil, fmt.Errorf("reading %s: %d bytes, shorter than the attributes word: %w", file, len(b), ErrMalformed)
	}
	return binary.LittleEndian.Uint32(b), b[4:], nil
}

// Set creates or replaces a variable. data must not be empty: SetVariable
// with DataSize 0 deletes (UEFI 2.10 §8.2.3), which is what Delete is for.
// On the live efivarfs the immutable flag is cleared first. A full NVRAM gives
// an error wrapping ErrNoSpace.
func (v *Vars) Set(name string, vendor guid.GUID, attrs uint32, data []byte) error {
	file, err := fileName(name, vendor)
	if err != nil {
		return err
	}
	if len(data) == 0 {
		return fmt.Errorf("writing %s: empty data would delete the variable; use Delete", file)
	}
	if v.efi != nil {
		err = v.efi.WriteEfivarsWithGuid(name, attributes.Attributes(attrs), data, efiGUID(vendor))
	} else {
		err = v.writePlain(file, binary.LittleEndian.AppendUint32(nil, attrs), data)
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("writing %s: %w: %w", file, ErrNoSpace, err)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", file, err)
	}
	return nil
}

// writePlain replaces file atomically and durably (pkg/atomicfile).
// efivarfs shows variables as 0644.
func (v *Vars) writePlain(file string, attrs, data []byte) error {
	return atomicfile.WriteFile(v.fs, "/"+file, append(attrs, data...), 0o644)
}

// efiGUID converts to go-uefi's GUID, whose first three fields are numbers.
func efiGUID(g guid.GUID) util.EFIGUID {
	e := util.EFIGUID{
		Data1: binary.LittleEndian.Uint32(g[0:4]),
		Data2: binary.LittleEndian.Uint16(g[4:6]),
		Data3: binary.LittleEndian.Uint16(g[6:8]),
	}
	copy(e.Data4[:], g[8:])
	return e
}

// Delete removes a variable. A missing variable gives an error wrapping
// ErrNotFound.
func (v *Vars) Delete(name string, vendor guid.GUID) error {
	file, err := fileName(name, vendor)
	if err != nil {
		return err
	}
	// Stat first: go-uefi's attr helpers open with O_CREATE, which on
	// efivarfs would leave an empty file behind for a missing variable.
	if _, err := v.fs.Stat("/" + file); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", file, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("deleting %s: %w", file, err)
	}
	if v.chattr {
		p := path.Join(attributes.Efivars, file)
		if err := attr.IsImmutable(p); errors.Is(err, attr.ErrIsImmutable) {
			if err := attr.UnsetImmutable(p); err != nil {
				return fmt.Errorf("deleting %s: clearing immutable flag: %w", file, err)
			}
		} else if err != nil {
			return fmt.Errorf("deleting %s: %w", file, err)
		}
	}
	if err := v.fs.Remove("/" + file); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("deleting %s: %w", file, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("deleting %s: %w", file, err)
	}
	return nil
}

// names returns the file names in the variable directory.
func (v *Vars) names() ([]string, error) {
	infos, err := afero.ReadDir(v.fs, "/")
	if err != nil {
		return nil, fmt.Errorf("listing EFI variables: %w", err)
	}
	names := make([]string, 0, len(infos))
	for _, fi := range infos {
		names = append(names, fi.Name())
	}
	return names, nil
}

// GetString reads a variable holding a NUL-terminated UTF-16LE string, as
// the Boot Loader Interface's variables (LoaderDevicePartUUID, ...) do.
func (v *Vars) GetString(name string, vendor guid.GUID) (string, error) {
	_, data, err := v.Get(name, vendor)
	if err != nil {
		return "", err
	}
	s, err := decodeUTF16Z(data)
	if err != nil {
		return "", fmt.Errorf("EFI variable %s: %w", name, err)
	}
	return s, nil
}
