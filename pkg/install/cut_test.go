package install

import "github.com/abboot/abboot/internal/powercut"

// cutDev is the disk image, of size bytes, with its writes through a
// power cut.
type cutDev struct {
	powercut.File
	size int64
}

// Close does nothing: the disk is shared by the install and the store,
// and the test closes it.
func (d *cutDev) Close() error { return nil }
