package efivar

import (
	"encoding/binary"
	"fmt"
)

// LoadOptionActive is LOAD_OPTION_ACTIVE (UEFI 2.10 §3.1.3): the boot
// manager only considers active options.
const LoadOptionActive = 0x1

// LoadOption is an EFI_LOAD_OPTION, the content of a Boot#### variable
// (UEFI 2.10 §3.1.3).
type LoadOption struct {
	Attributes  uint32
	Description string
	// FilePath is the FilePathList. Usually it is one device path; further
	// ones follow an End node kept as Raw (see DevicePath).
	FilePath     DevicePath
	OptionalData []byte
}

// ParseLoadOption decodes an EFI_LOAD_OPTION. For input whose FilePathList
// ends with an End node, MarshalBinary returns the input unchanged.
func ParseLoadOption(b []byte) (*LoadOption, error) {
	// Attributes (4 bytes) and FilePathListLength (2 bytes).
	const fixed = 6
	if len(b) < fixed {
		return nil, fmt.Errorf("load option of %d bytes, want at least %d: %w", len(b), fixed, ErrMalformed)
	}
	o := &LoadOption{Attributes: binary.LittleEndian.Uint32(b)}
	pathLen := int(binary.LittleEndian.Uint16(b[4:]))
	rest := b[fixed:]
	end := -1
	for i := 0; i+1 < len(rest); i += 2 {
		if rest[i] == 0 && rest[i+1] == 0 {
			end = i + 2
			break
		}
	}
	if end < 0 {
		return nil, fmt.Errorf("load option description has no terminating NUL: %w", ErrMalformed)
	}
	desc, err := decodeUTF16Z(rest[:end])
	if err != nil {
		return nil, fmt.Errorf("load option description: %w", err)
	}
	o.Description = desc
	rest = rest[end:]
	if pathLen > len(rest) {
		return nil, fmt.Errorf("load option FilePathListLength %d past the end (%d bytes left): %w", pathLen, len(rest), ErrMalformed)
	}
	if o.FilePath, err = ParseDevicePath(rest[:pathLen]); err != nil {
		return nil, fmt.Errorf("load option file path: %w", err)
	}
	if len(rest) > pathLen {
		o.OptionalData = append([]byte(nil), rest[pathLen:]...)
	}
	return o, nil
}

// MarshalBinary encodes the load option.
func (o *LoadOption) MarshalBinary() ([]byte, error) {
	desc, err := encodeUTF16Z(o.Description)
	if err != nil {
		return nil, fmt.Errorf("load option description: %w", err)
	}
	path, err := o.FilePath.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("load option file path: %w", err)
	}
	if len(path) > 0xffff {
		return nil, fmt.Errorf("load option file path of %d bytes does not fit FilePathListLength", len(path))
	}
	b := binary.LittleEndian.AppendUint32(nil, o.Attributes)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(path)))
	b = append(b, desc...)
	b = append(b, path...)
	return append(b, o.OptionalData...), nil
}
