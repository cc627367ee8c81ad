// Package secureboot is abboot's view of UEFI Secure Boot: it decides
// whether firmware with a given db and dbx would run a PE image (Verify,
// UEFI 2.10 §32.5.3.3, as EDK2 does it), reads the firmware's state from
// efivarfs (ReadFirmware: SecureBoot, SetupMode, db, dbx), makes an owner's
// PK, KEK and db (GenerateKeySet, LoadKeySet), signs images with db (Sign),
// makes the signed variable updates that enroll the set (KeySet.Updates,
// the .auth files) and writes them into firmware in setup mode (Enroll).
//
// It exists because firmware checks only what firmware loads: a UKI reached
// by kexec is checked by nobody but the init, and the kernel's own kexec
// check covers only the kernel image, not the initrd or command line next
// to it in the UKI. Verify is what the init and the installer ask before
// they trust a UKI; it works on bytes in memory so that the bytes checked
// are the bytes used.
//
// Signature lists (EFI_SIGNATURE_LIST, §32.4.1) are parsed here, with every
// size checked, for X.509 certificates, SHA-256 image digests and
// X.509-SHA-256 certificate hashes; other entry types are ignored.
// Authenticode ASN.1 and the image hash are go-uefi's, wrapped so that
// malformed input is an error, not a panic. The package does not manage
// dbx updates, the Microsoft keys, shim or MOK, and it does not check
// certificate dates, as firmware does not.
package secureboot
