package main

import (
	"flag"
	"fmt"
	"strings"

	"github.com/abboot/abboot/pkg/diskimage"
	"github.com/abboot/abboot/pkg/gpt"
	"github.com/abboot/abboot/pkg/guid"
	"github.com/abboot/abboot/pkg/slot"
	"github.com/abboot/abboot/pkg/slotstate"
	"github.com/abboot/abboot/pkg/slotstore"
	"github.com/abboot/abboot/pkg/verity"
)

// partTypes are the names --part accepts for the DPS types abboot uses.
var partTypes = map[string]guid.GUID{
	"esp":         gpt.TypeESP,
	"root":        gpt.TypeRootX86_64,
	"root-verity": gpt.TypeRootVerityX86_64,
	"data":        gpt.TypeLinuxData,
	"var":         gpt.TypeVar,
}

// diskCmd builds a GPT disk image:
//
//	abimage disk --esp-file EFI/abboot/a.efi=PATH ... [--esp-size MiB]
//	    [--part LABEL:TYPE:IMAGE[:UUID] ...]
//	    [--verity-slot SLOT:ROOT:VERITY:ROOTHASH ...] [--data MiB] [--size MiB] -o disk.img
func diskCmd(args []string) error {
	fs := flag.NewFlagSet("disk", flag.ContinueOnError)
	s := diskimage.Spec{ESPFiles: map[string]string{}}
	var out string
	fs.Func("esp-file", "copy host file PATH into the ESP as `DEST=PATH` (repeatable)", func(v string) error {
		dst, src, ok := strings.Cut(v, "=")
		if !ok || dst == "" || src == "" {
			return fmt.Errorf("want DEST=PATH, got %q", v)
		}
		if _, dup := s.ESPFiles[dst]; dup {
			return fmt.Errorf("%s given twice", dst)
		}
		s.ESPFiles[dst] = src
		return nil
	})
	fs.Func("part", "add a partition after the ESP filled from IMAGE, as `LABEL:TYPE:IMAGE[:UUID]`; TYPE is esp, root, root-verity, var, data or a GUID (repeatable)", func(v string) error {
		p, err := parsePart(v)
		if err != nil {
			return err
		}
		s.Partitions = append(s.Partitions, p)
		return nil
	})
	fs.Func("verity-slot", "add a slot's root and verity partitions as `SLOT:ROOT:VERITY:ROOTHASH`, with DPS types, labels abboot-root-SLOT and abboot-verity-SLOT and UUIDs from the root hash; the first slot given starts committed, the others with priority 0 (repeatable)", func(v string) error {
		ps, err := veritySlot(v, len(s.Partitions) == 0)
		s.Partitions = append(s.Partitions, ps...)
		return err
	})
	var dataMiB int
	fs.IntVar(&dataMiB, "data", 0, "add an empty data partition of `MiB` for the OS's /var, last, with the DPS /var type and label "+gpt.DataLabel+" (the OS formats it)")
	fs.IntVar(&s.ESPSizeMiB, "esp-size", diskimage.DefaultESPSizeMiB, "ESP size in `MiB`")
	fs.IntVar(&s.SizeMiB, "size", 0, "disk size in `MiB`; 0 is just big enough")
	fs.StringVar(&out, "o", "", "output disk image")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if out == "" || fs.NArg() > 0 {
		return fmt.Errorf("need -o, and no arguments")
	}
	if dataMiB > 0 {
		s.Partitions = append(s.Partitions, diskimage.PartSpec{Label: gpt.DataLabel, Type: gpt.TypeVar, SizeMiB: dataMiB})
	}
	if err := diskimage.Build(out, s); err != nil {
		return err
	}
	return printTable(out)
}

// parsePart parses LABEL:TYPE:IMAGE[:UUID]. The image path may itself
// contain colons; a trailing ":UUID" is taken as the UUID only when it
// parses as one.
func parsePart(v string) (diskimage.PartSpec, error) {
	f := strings.SplitN(v, ":", 3)
	if len(f) != 3 || f[0] == "" || f[2] == "" {
		return diskimage.PartSpec{}, fmt.Errorf("want LABEL:TYPE:IMAGE[:UUID], got %q", v)
	}
	p := diskimage.PartSpec{Label: f[0], Image: f[2]}
	typ, ok := partTypes[f[1]]
	if !ok {
		var err error
		if typ, err = guid.Parse(f[1]); err != nil {
			return p, fmt.Errorf("partition type %q is not esp, root, root-verity, var, data or a GUID", f[1])
		}
	}
	p.Type = typ
	if i := strings.LastIndex(p.Image, ":"); i > 0 {
		if u, err := guid.Parse(p.Image[i+1:]); err == nil {
			p.Image, p.UUID = p.Image[:i], u
		}
	}
	return p, nil
}

// veritySlot parses SLOT:ROOT:VERITY:ROOTHASH into the slot's root and
// verity partitions. By the Discoverable Partitions Specification the root
// partition's UUID is the first 128 bits of the root hash and the verity
// partition's the last 128 bits, so the init finds them from the hash in
// its signed command line. A committed slot starts with the cgpt bits
// priority 1, successful; the others with priority 0 until installed.
func veritySlot(v string, committed bool) ([]diskimage.PartSpec, error) {
	f := strings.Split(v, ":")
	if len(f) != 4 {
		return nil, fmt.Errorf("want SLOT:ROOT:VERITY:ROOTHASH, got %q", v)
	}
	sl, err := slot.Parse(f[0])
	if err != nil {
		return nil, err
	}
	hash, err := verity.ParseRootHash(f[3])
	if err != nil {
		return nil, err
	}
	var attrs uint64
	if committed {
		attrs = slotstore.WithAttrs(0, slotstate.Attrs{Priority: 1, Successful: true})
	}
	rootUUID, verityUUID := verity.PartitionUUIDs(hash)
	return []diskimage.PartSpec{
		{Label: sl.RootLabel(), Type: gpt.TypeRootX86_64, UUID: rootUUID, Image: f[1], Attributes: attrs},
		{Label: sl.VerityLabel(), Type: gpt.TypeRootVerityX86_64, UUID: verityUUID, Image: f[2]},
	}, nil
}

// printTable prints the partitions of the built image, since their UUIDs
// may be random.
func printTable(path string) error {
	t, err := gpt.ReadFile(path)
	if err != nil {
		return err
	}
	fmt.Printf("%s: disk GUID %s\n", path, t.DiskGUID)
	for _, p := range t.Partitions {
		fmt.Printf("%d %-16s type=%s uuid=%s offset=%d size=%d\n",
			p.Number, p.Name, p.Type, p.UUID, p.Start(t.SectorSize), p.Size(t.SectorSize))
	}
	return nil
}
