package bundle

import "fmt"

// PolicyOption changes what Policy accepts.
type PolicyOption func(*policy)

type policy struct {
	allowDowngrade bool
	slotSizes      map[string]int64
}

// AllowDowngrade lets Policy accept a version older than the running one
// when allow is true (for a deliberate rollback to a known-good build).
func AllowDowngrade(allow bool) PolicyOption {
	return func(p *policy) { p.allowDowngrade = allow }
}

// SlotSizes makes Policy refuse a payload larger than the space for it,
// given in bytes per payload name; a payload whose name is not in sizes
// has no place on this system (a root for an ESP-only layout) and is
// refused as incompatible.
func SlotSizes(sizes map[string]int64) PolicyOption {
	return func(p *policy) { p.slotSizes = sizes }
}

// Policy returns the check for NewReader that an installer on a system
// with the given compatible string, running version running, applies: the
// bundle must be for this compatible string and must not be older than
// running (CompareVersions; the same version is accepted, to repair a
// slot), unless the options say otherwise. An unparseable running version
// refuses every bundle unless downgrades are allowed, since a downgrade
// could not be ruled out.
func Policy(compatible, running string, opts ...PolicyOption) func(Manifest) error {
	var p policy
	for _, o := range opts {
		o(&p)
	}
	return func(m Manifest) error {
		if m.Compatible != compatible {
			return fmt.Errorf("%w: it is for %q, this system is %q", ErrIncompatible, m.Compatible, compatible)
		}
		if !p.allowDowngrade {
			c, err := CompareVersions(m.Version, running)
			if err != nil {
				return fmt.Errorf("%w: cannot compare bundle version with the running one: %v", ErrDowngrade, err)
			}
			if c < 0 {
				return fmt.Errorf("%w: bundle version %s is older than the running %s", ErrDowngrade, m.Version, running)
			}
		}
		if p.slotSizes == nil {
			return nil
		}
		for _, pl := range m.Payloads {
			max, ok := p.slotSizes[pl.Name]
			if !ok {
				return fmt.Errorf("%w: it has a %s payload, this system has no place for one", ErrIncompatible, pl.Name)
			}
			if pl.Size > max {
				return fmt.Errorf("%w: %s is %d bytes, its slot holds %d", ErrTooLarge, pl.Name, pl.Size, max)
			}
		}
		return nil
	}
}
