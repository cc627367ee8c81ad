package install

import "github.com/abboot/abboot/internal/powercut"

// cutDev is the disk image, of size bytes, with its writes through a
// power cut.
type cutDev struct {
	powercut.File
	size int64
	// written, if set, is told of every write.
	written func(off, n int64)
}

func (d *cutDev) WriteAt(b []byte, off int64) (int, error) {
	if d.written != nil {
		d.written(off, int64(len(b)))
	}
	return d.File.WriteAt(b, off)
}

// Close does nothing: the disk is shared by the install and the store,
// and the test closes it.
func (d *cutDev) Close() error { return nil }
