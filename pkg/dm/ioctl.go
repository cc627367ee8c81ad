package dm

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// Layout of struct dm_ioctl (include/uapi/linux/dm-ioctl.h, interface
// version 4), in host byte order:
//
//	0   __u32 version[3]
//	12  __u32 data_size      size of the whole buffer, header included
//	16  __u32 data_start     offset of the payload from the header's start
//	20  __u32 target_count
//	24  __s32 open_count
//	28  __u32 flags
//	32  __u32 event_nr
//	36  __u32 padding
//	40  __u64 dev            huge_encode_dev(major, minor)
//	48  char  name[128]      DM_NAME_LEN, NUL-terminated
//	176 char  uuid[129]      DM_UUID_LEN, NUL-terminated
//	305 char  data[7]        padding up to the payload
//
// and of struct dm_target_spec, which the parameter string follows:
//
//	0   __u64 sector_start
//	8   __u64 length         in 512-byte sectors
//	16  __s32 status
//	20  __u32 next
//	24  char  target_type[16] DM_MAX_TYPE_NAME, NUL-terminated
const (
	headerSize = 312 // sizeof(struct dm_ioctl), unix.SizeofDmIoctl
	specSize   = 40  // sizeof(struct dm_target_spec), unix.SizeofDmTargetSpec

	nameLen  = 128 // DM_NAME_LEN
	uuidLen  = 129 // DM_UUID_LEN
	typeLen  = 16  // DM_MAX_TYPE_NAME
	nameOff  = 48
	uuidOff  = nameOff + nameLen
	specType = 24
)

// interfaceVersion is the dm ioctl interface version we speak. The kernel
// accepts any request whose major matches and whose minor is not newer
// than its own (drivers/md/dm-ioctl.c, check_version); 4.0.0 is the
// baseline every 4.x kernel takes, and nothing here needs a later minor.
var interfaceVersion = [3]uint32{4, 0, 0}

// ne is the byte order of the ioctl structures: the kernel's own.
var ne = binary.NativeEndian

// header is the part of struct dm_ioctl this package uses.
type header struct {
	Version     [3]uint32
	DataSize    uint32
	DataStart   uint32
	TargetCount uint32
	OpenCount   int32
	Flags       uint32
	EventNr     uint32
	Dev         uint64
	Name        string
	UUID        string
}

// target is one line of a device-mapper table: a dm_target_spec and the
// string after it (the target's parameters in a table load, its status or
// table line in a DM_TABLE_STATUS reply).
type target struct {
	Start, Length uint64 // in 512-byte sectors
	Type          string
	Params        string
}

// cString copies s into b as a NUL-terminated string, refusing what
// would not fit with its NUL or would be cut short by an embedded NUL.
func cString(b []byte, s, what string) error {
	if len(s) >= len(b) {
		return fmt.Errorf("%s %q is longer than %d bytes", what, s, len(b)-1)
	}
	if bytes.IndexByte([]byte(s), 0) >= 0 {
		return fmt.Errorf("%s %q contains a NUL byte", what, s)
	}
	copy(b, s)
	return nil
}

// goString returns the string in b up to its first NUL, which must exist.
func goString(b []byte, what string) (string, error) {
	n := bytes.IndexByte(b, 0)
	if n < 0 {
		return "", fmt.Errorf("%s is not NUL-terminated", what)
	}
	return string(b[:n]), nil
}

// encode returns a request buffer of size bytes (at least headerSize): the
// header, with DataSize and DataStart set to describe the buffer, and the
// targets of a table load from headerSize on. A table load's next field is
// the offset of the following spec from the start of this one (dm-ioctl.c,
// next_target); specs start 8-byte aligned as libdevmapper places them.
func encode(h header, targets []target, size int) ([]byte, error) {
	b := make([]byte, headerSize)
	for _, t := range targets {
		spec := make([]byte, specSize, specSize+align8(len(t.Params)+1))
		ne.PutUint64(spec[0:], t.Start)
		ne.PutUint64(spec[8:], t.Length)
		if err := cString(spec[specType:specSize], t.Type, "target type"); err != nil {
			return nil, err
		}
		if bytes.IndexByte([]byte(t.Params), 0) >= 0 {
			return nil, fmt.Errorf("%s target parameters contain a NUL byte", t.Type)
		}
		spec = append(spec, t.Params...)
		spec = append(spec, make([]byte, cap(spec)-len(spec))...)
		ne.PutUint32(spec[20:], uint32(len(spec)))
		b = append(b, spec...)
	}
	if len(b) < size {
		b = append(b, make([]byte, size-len(b))...)
	}
	h.DataSize = uint32(len(b))
	h.DataStart = headerSize
	h.TargetCount = uint32(len(targets))
	for i, v := range h.Version {
		ne.PutUint32(b[4*i:], v)
	}
	ne.PutUint32(b[12:], h.DataSize)
	ne.PutUint32(b[16:], h.DataStart)
	ne.PutUint32(b[20:], h.TargetCount)
	ne.PutUint32(b[24:], uint32(h.OpenCount))
	ne.PutUint32(b[28:], h.Flags)
	ne.PutUint32(b[32:], h.EventNr)
	ne.PutUint64(b[40:], h.Dev)
	if err := cString(b[nameOff:uuidOff], h.Name, "device-mapper name"); err != nil {
		return nil, err
	}
	if err := cString(b[uuidOff:uuidOff+uuidLen], h.UUID, "device-mapper uuid"); err != nil {
		return nil, err
	}
	return b, nil
}

func align8(n int) int { return (n + 7) &^ 7 }

// decodeHeader parses the header of a reply and checks that DataSize lies
// within b. A reply without payload has DataSize offsetof(struct dm_ioctl,
// data), 305, short of DataStart (dm-ioctl.c, ctl_ioctl), so DataStart is
// checked by decodeTargets.
func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerSize {
		return h, fmt.Errorf("device-mapper reply of %d bytes is shorter than its %d-byte header", len(b), headerSize)
	}
	for i := range h.Version {
		h.Version[i] = ne.Uint32(b[4*i:])
	}
	h.DataSize = ne.Uint32(b[12:])
	h.DataStart = ne.Uint32(b[16:])
	h.TargetCount = ne.Uint32(b[20:])
	h.OpenCount = int32(ne.Uint32(b[24:]))
	h.Flags = ne.Uint32(b[28:])
	h.EventNr = ne.Uint32(b[32:])
	h.Dev = ne.Uint64(b[40:])
	if h.DataSize > uint32(len(b)) {
		return h, fmt.Errorf("device-mapper reply: data size %d exceeds the %d-byte buffer", h.DataSize, len(b))
	}
	var err error
	if h.Name, err = goString(b[nameOff:uuidOff], "device-mapper name"); err != nil {
		return h, err
	}
	if h.UUID, err = goString(b[uuidOff:uuidOff+uuidLen], "device-mapper uuid"); err != nil {
		return h, err
	}
	return h, nil
}

// decodeTargets parses the payload of a DM_TABLE_STATUS reply: TargetCount
// specs, each followed by its NUL-terminated string. Unlike in a table
// load, a reply's next field is the offset of the following spec from the
// start of the payload (dm-ioctl.c, retrieve_status: spec->next = outptr -
// outbuf).
func decodeTargets(h header, b []byte) ([]target, error) {
	if h.DataStart < headerSize || h.DataStart > h.DataSize {
		return nil, fmt.Errorf("device-mapper reply: data start %d is outside the header and data size %d", h.DataStart, h.DataSize)
	}
	data := b[h.DataStart:h.DataSize]
	// Every target takes at least a spec; a larger count is corrupt, and
	// checking it bounds the allocation below.
	if uint64(h.TargetCount) > uint64(len(data)/specSize) {
		return nil, fmt.Errorf("device-mapper reply: %d targets do not fit %d bytes", h.TargetCount, len(data))
	}
	targets := make([]target, 0, h.TargetCount)
	off := 0
	for i := range int(h.TargetCount) {
		if off > len(data)-specSize {
			return nil, fmt.Errorf("device-mapper reply: target %d at offset %d overruns the %d-byte payload", i, off, len(data))
		}
		spec := data[off:]
		typ, err := goString(spec[specType:specSize], "target type")
		if err != nil {
			return nil, fmt.Errorf("device-mapper reply: target %d: %w", i, err)
		}
		params, err := goString(spec[specSize:], "target parameters")
		if err != nil {
			return nil, fmt.Errorf("device-mapper reply: target %d: %w", i, err)
		}
		targets = append(targets, target{Start: ne.Uint64(spec[0:]), Length: ne.Uint64(spec[8:]), Type: typ, Params: params})
		next := int64(ne.Uint32(spec[20:]))
		// Specs must move forward past this one's string, so a corrupt
		// reply cannot make two targets out of the same bytes.
		if i+1 < int(h.TargetCount) && next < int64(off+specSize+len(params)+1) {
			return nil, fmt.Errorf("device-mapper reply: target %d points back to offset %d", i, next)
		}
		off = int(min(next, int64(len(data))))
	}
	return targets, nil
}
