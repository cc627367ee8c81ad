package efivar

// This is a codec of its own rather than go-uefi's efi/device: that parser
// calls log.Fatalf on a truncated node (it would kill PID 1), drops the nodes
// it does not know, stops at the first End node and has no encoder, while
// abboot must rewrite firmware entries without changing nodes it does not
// understand.

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/abboot/abboot/pkg/guid"
)

// Device path node types and sub-types, UEFI 2.10 §10.3.1.
const (
	typeMedia       = 0x04
	subHardDrive    = 0x01
	subFilePath     = 0x04
	typeEnd         = 0x7f
	subEndEntire    = 0xff
	nodeHeaderLen   = 4
	hardDriveLen    = 42 // §10.3.5.1, header included
	maxNodeDataSize = 0xffff - nodeHeaderLen
)

// DevicePath is a sequence of device path nodes (UEFI 2.10 §10.2). The End
// Entire Device Path node that terminates it is implicit: ParseDevicePath
// drops it and MarshalBinary adds it back. An End node that is not last (the
// separator of a multi-path FilePathList, §3.1.3) stays as a Raw node, as
// does a last one that follows another End.
type DevicePath []Node

// Node is one device path node. The types are HardDrive, FilePath and Raw.
type Node interface {
	// Kind returns the node's Type and Sub-Type (UEFI 2.10 §10.3.1).
	Kind() (typ, subType uint8)
	// String returns the node in the text form efibootmgr -v prints.
	String() string
	// body returns the node's bytes after the 4-byte header.
	body() ([]byte, error)
}

// HardDrive is the Hard Drive Media Device Path node (UEFI 2.10 §10.3.5.1):
// a partition of the disk that holds the rest of the path. For GPT, MBRType
// and SignatureType are 2 and Signature is the partition's unique GUID.
type HardDrive struct {
	PartitionNumber               uint32
	PartitionStart, PartitionSize uint64 // in logical blocks
	Signature                     guid.GUID
	MBRType                       uint8
	SignatureType                 uint8
}

// Partition format and signature type values, UEFI 2.10 §10.3.5.1.
const (
	MBRTypeGPT       = 2
	SignatureTypeMBR = 1
	SignatureTypeGPT = 2
)

// Kind implements Node.
func (HardDrive) Kind() (uint8, uint8) { return typeMedia, subHardDrive }

func (h HardDrive) body() ([]byte, error) {
	b := make([]byte, 0, hardDriveLen-nodeHeaderLen)
	b = binary.LittleEndian.AppendUint32(b, h.PartitionNumber)
	b = binary.LittleEndian.AppendUint64(b, h.PartitionStart)
	b = binary.LittleEndian.AppendUint64(b, h.PartitionSize)
	b = append(b, h.Signature[:]...)
	return append(b, h.MBRType, h.SignatureType), nil
}

// String returns e.g. HD(1,GPT,<guid>,0x800,0x32000).
func (h HardDrive) String() string {
	var sig string
	switch h.SignatureType {
	case SignatureTypeGPT:
		sig = "GPT," + h.Signature.String()
	case SignatureTypeMBR:
		sig = fmt.Sprintf("MBR,0x%08x", binary.LittleEndian.Uint32(h.Signature[:4]))
	default:
		sig = fmt.Sprintf("%d,0", h.SignatureType)
	}
	return fmt.Sprintf("HD(%d,%s,0x%x,0x%x)", h.PartitionNumber, sig, h.PartitionStart, h.PartitionSize)
}

// FilePath is the File Path Media Device Path node (UEFI 2.10 §10.3.5.4),
// a path on the partition named by the node before it, e.g. \EFI\abboot\a.efi.
type FilePath struct {
	Path string
}

// Kind implements Node.
func (FilePath) Kind() (uint8, uint8) { return typeMedia, subFilePath }

func (f FilePath) body() ([]byte, error) {
	b, err := encodeUTF16Z(f.Path)
	if err != nil {
		return nil, fmt.Errorf("file path node: %w", err)
	}
	return b, nil
}

// String returns e.g. File(\EFI\abboot\a.efi), as efibootmgr 17 prints it.
func (f FilePath) String() string { return "File(" + f.Path + ")" }

// Raw is any other node, kept byte for byte.
type Raw struct {
	Type, SubType uint8
	Data          []byte // after the 4-byte header
}

// Kind implements Node.
func (r Raw) Kind() (uint8, uint8) { return r.Type, r.SubType }

func (r Raw) body() ([]byte, error) { return r.Data, nil }

// String returns the generic text form Path(type,subtype,hexdata)
// (UEFI 2.10 §10.6.1.1).
func (r Raw) String() string {
	return fmt.Sprintf("Path(%d,%d,%s)", r.Type, r.SubType, hex.EncodeToString(r.Data))
}

func isEndEntire(n Node) bool {
	t, s := n.Kind()
	return t == typeEnd && s == subEndEntire
}

// ParseDevicePath decodes a device path. It checks every node length; a
// HardDrive node of the wrong size is kept as Raw, a malformed FilePath node
// or an End Entire node longer than its 4-byte header is an error. For input
// that ends with an End Entire node, MarshalBinary returns it unchanged.
func ParseDevicePath(b []byte) (DevicePath, error) {
	if len(b) == 0 {
		return nil, fmt.Errorf("empty device path: %w", ErrMalformed)
	}
	var p DevicePath
	for off := 0; off < len(b); {
		if len(b)-off < nodeHeaderLen {
			return nil, fmt.Errorf("device path node at offset %d: %d bytes left, want a 4-byte header: %w", off, len(b)-off, ErrMalformed)
		}
		typ, sub := b[off], b[off+1]
		n := int(binary.LittleEndian.Uint16(b[off+2:]))
		if n < nodeHeaderLen || n > len(b)-off {
			return nil, fmt.Errorf("device path node at offset %d: length %d out of range 4..%d: %w", off, n, len(b)-off, ErrMalformed)
		}
		if typ == typeEnd && sub == subEndEntire && n != nodeHeaderLen {
			return nil, fmt.Errorf("End node at offset %d has length %d, want 4: %w", off, n, ErrMalformed)
		}
		node, err := decodeNode(typ, sub, b[off+nodeHeaderLen:off+n])
		if err != nil {
			return nil, fmt.Errorf("device path node at offset %d: %w", off, err)
		}
		p = append(p, node)
		off += n
	}
	// Drop the terminating End, which MarshalBinary adds back, unless the
	// node before it is an End too: MarshalBinary adds none after an End.
	if n := len(p); isEndEntire(p[n-1]) && (n == 1 || !isEndEntire(p[n-2])) {
		p = p[:n-1]
	}
	return p, nil
}

func decodeNode(typ, sub uint8, data []byte) (Node, error) {
	switch {
	case typ == typeMedia && sub == subHardDrive && len(data) == hardDriveLen-nodeHeaderLen:
		h := HardDrive{
			PartitionNumber: binary.LittleEndian.Uint32(data[0:]),
			PartitionStart:  binary.LittleEndian.Uint64(data[4:]),
			PartitionSize:   binary.LittleEndian.Uint64(data[12:]),
			MBRType:         data[36],
			SignatureType:   data[37],
		}
		copy(h.Signature[:], data[20:36])
		return h, nil
	case typ == typeMedia && sub == subFilePath:
		s, err := decodeUTF16Z(data)
		if err != nil {
			return nil, fmt.Errorf("file path node: %w", err)
		}
		return FilePath{Path: s}, nil
	}
	r := Raw{Type: typ, SubType: sub}
	if len(data) > 0 {
		r.Data = append([]byte(nil), data...)
	}
	return r, nil
}

// MarshalBinary encodes the path, appending an End Entire node unless the
// last node already is one.
func (p DevicePath) MarshalBinary() ([]byte, error) {
	var b []byte
	for i, n := range p {
		if n == nil {
			return nil, fmt.Errorf("device path node %d is nil", i)
		}
		data, err := n.body()
		if err != nil {
			return nil, err
		}
		if len(data) > maxNodeDataSize {
			return nil, fmt.Errorf("device path node %d: %d bytes do not fit a 16-bit length", i, len(data))
		}
		typ, sub := n.Kind()
		if typ == typeEnd && sub == subEndEntire && len(data) != 0 {
			return nil, fmt.Errorf("device path node %d: End node with %d bytes of data", i, len(data))
		}
		b = append(b, typ, sub)
		b = binary.LittleEndian.AppendUint16(b, uint16(nodeHeaderLen+len(data)))
		b = append(b, data...)
	}
	if len(p) == 0 || !isEndEntire(p[len(p)-1]) {
		b = append(b, typeEnd, subEndEntire, nodeHeaderLen, 0)
	}
	return b, nil
}

// String returns the path as efibootmgr -v prints it, e.g.
// HD(1,GPT,<guid>,0x800,0x32000)/File(\EFI\abboot\a.efi).
func (p DevicePath) String() string {
	s := make([]string, len(p))
	for i, n := range p {
		s[i] = fmt.Sprint(n)
	}
	return strings.Join(s, "/")
}

// File returns the path of the first instance's FilePath node.
func (p DevicePath) File() (string, bool) {
	for _, n := range p.first() {
		switch f := n.(type) {
		case FilePath:
			return f.Path, true
		case *FilePath:
			return f.Path, true
		}
	}
	return "", false
}

// HardDrive returns a copy of the first instance's HardDrive node.
func (p DevicePath) HardDrive() (*HardDrive, bool) {
	for _, n := range p.first() {
		switch h := n.(type) {
		case HardDrive:
			return &h, true
		case *HardDrive:
			c := *h
			return &c, true
		}
	}
	return nil, false
}

// first returns the nodes before the first End node: in a load option the
// first device path is the one the boot manager uses (UEFI 2.10 §3.1.3).
func (p DevicePath) first() DevicePath {
	for i, n := range p {
		if n == nil {
			continue
		}
		if t, _ := n.Kind(); t == typeEnd {
			return p[:i]
		}
	}
	return p
}

// decodeUTF16Z decodes a UCS-2/UTF-16LE string that fills b exactly and ends
// with its only NUL. It rejects anything that would not encode back to b.
func decodeUTF16Z(b []byte) (string, error) {
	if len(b)%2 != 0 {
		return "", fmt.Errorf("UTF-16 string of odd length %d: %w", len(b), ErrMalformed)
	}
	u := make([]uint16, len(b)/2)
	for i := range u {
		u[i] = binary.LittleEndian.Uint16(b[2*i:])
	}
	if len(u) == 0 || u[len(u)-1] != 0 {
		return "", fmt.Errorf("UTF-16 string without terminating NUL: %w", ErrMalformed)
	}
	u = u[:len(u)-1]
	var sb strings.Builder
	for i := 0; i < len(u); i++ {
		r := rune(u[i])
		switch {
		case r == 0:
			return "", fmt.Errorf("UTF-16 string with NUL at index %d: %w", i, ErrMalformed)
		case utf16.IsSurrogate(r):
			if i+1 == len(u) {
				return "", fmt.Errorf("UTF-16 string with unpaired surrogate at index %d: %w", i, ErrMalformed)
			}
			if r = utf16.DecodeRune(r, rune(u[i+1])); r == utf8.RuneError {
				return "", fmt.Errorf("UTF-16 string with unpaired surrogate at index %d: %w", i, ErrMalformed)
			}
			i++
		}
		sb.WriteRune(r)
	}
	return sb.String(), nil
}

// encodeUTF16Z encodes s as UTF-16LE with a terminating NUL.
func encodeUTF16Z(s string) ([]byte, error) {
	if !utf8.ValidString(s) {
		return nil, fmt.Errorf("string %q is not valid UTF-8", s)
	}
	if strings.ContainsRune(s, 0) {
		return nil, fmt.Errorf("string %q contains NUL", s)
	}
	var b []byte
	for _, u := range utf16.Encode([]rune(s)) {
		b = binary.LittleEndian.AppendUint16(b, u)
	}
	return append(b, 0, 0), nil
}
