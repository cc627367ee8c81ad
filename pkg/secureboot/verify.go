package secureboot

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/foxboron/go-uefi/authenticode"
	"github.com/foxboron/go-uefi/pkcs7"
	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Why an image is refused. Verify's error wraps exactly one of them (or
// ErrMalformed) and says which signature failed and how.
var (
	// ErrUnsigned: the image has no signature and its digest is not in db.
	ErrUnsigned = errors.New("image is not signed")
	// ErrUntrusted: no signature is valid for the image and chains to a
	// certificate in db, and its digest is not in db.
	ErrUntrusted = errors.New("no signature trusted by db")
	// ErrForbidden: the image's digest, or a certificate of one of its
	// signatures, is in dbx.
	ErrForbidden = errors.New("image is forbidden by dbx")
)

// maxChain bounds the certificate chain walked from a signer to db.
const maxChain = 8

// Result says why an image was accepted.
type Result struct {
	// Digest is the image's Authenticode SHA-256 digest.
	Digest [sha256.Size]byte
	// Signature is the index of the accepted signature, -1 when the
	// digest itself is in db.
	Signature int
	// Signer signed the image; Anchor is the db certificate it chains to
	// (the same certificate when db holds the signer itself).
	Signer, Anchor *x509.Certificate
}

// Verify decides whether UEFI firmware enforcing Secure Boot with these db
// and dbx would run the image, following UEFI 2.10 §32.5.3.3 ("Authorization
// Process") as EDK2's DxeImageVerificationLib implements it:
//
//  1. an image whose Authenticode digest is in dbx is refused;
//  2. every signature is checked against dbx: a signature whose signer or
//     any certificate of its chain is in dbx refuses the image, whatever
//     the other signatures say;
//  3. the image is accepted if one signature covers the image's digest, is
//     valid, and its signer is in db or chains to a certificate in db, or
//     if the digest is in db.
//
// Like EDK2, it ignores certificate validity dates (firmware has no trusted
// clock) and extended key usages. It verifies b as given: callers must use
// these very bytes afterwards, never reread the file. A nil dbx is empty.
func Verify(b []byte, db, dbx *Database) (*Result, error) {
	if db == nil {
		db = &Database{}
	}
	if dbx == nil {
		dbx = &Database{}
	}
	img, err := parsePE(b)
	if err != nil {
		return nil, err
	}
	digest, err := img.digest()
	if err != nil {
		return nil, err
	}
	if dbx.hasHash(digest) {
		return nil, fmt.Errorf("%w: its digest %x is in dbx", ErrForbidden, digest)
	}
	sigs, err := img.signatures()
	if err != nil {
		return nil, err
	}
	var accepted *Result
	var why []string
	for i, sig := range sigs {
		signer, chain, err := checkSignature(sig, digest[:])
		if err != nil {
			why = append(why, fmt.Sprintf("signature %d: %v", i+1, err))
			continue
		}
		for _, c := range chain {
			if dbx.hasCert(c) {
				return nil, fmt.Errorf("%w: signature %d: certificate %q is in dbx", ErrForbidden, i+1, c.Subject)
			}
		}
		anchor := trustAnchor(signer, chain, db)
		if anchor != nil && dbx.hasCert(anchor) {
			return nil, fmt.Errorf("%w: signature %d: certificate %q is in dbx", ErrForbidden, i+1, anchor.Subject)
		}
		if anchor == nil {
			why = append(why, fmt.Sprintf("signature %d: signer %q (issuer %q) is not in db and chains to no db certificate", i+1, signer.Subject, signer.Issuer))
			continue
		}
		if accepted == nil {
			accepted = &Result{Digest: digest, Signature: i, Signer: signer, Anchor: anchor}
		}
	}
	if accepted != nil {
		return accepted, nil
	}
	if db.hasHash(digest) {
		return &Result{Digest: digest, Signature: -1}, nil
	}
	if len(sigs) == 0 {
		return nil, fmt.Errorf("%w (digest %x not in db)", ErrUnsigned, digest)
	}
	return nil, fmt.Errorf("%w: %s", ErrUntrusted, strings.Join(why, "; "))
}

// checkSignature checks one Authenticode PKCS#7 SignedData against the
// image digest and returns its signer and the certificates it carries.
// go-uefi parses the ASN.1; the checks are here because its Verify neither
// compares the messageDigest attribute with the signed content nor finds
// a signer that db holds only through a chain.
func checkSignature(sig, digest []byte) (signer *x509.Certificate, certs []*x509.Certificate, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("malformed signature: %v", r)
		}
	}()
	ac, err := authenticode.ParseAuthenticode(sig)
	if err != nil {
		return nil, nil, err
	}
	if ac.Algid == nil || !ac.Algid.Algorithm.Equal(pkcs7.OIDDigestAlgorithmSHA256) {
		return nil, nil, errors.New("digest algorithm is not SHA-256")
	}
	if !bytes.Equal(ac.Digest, digest) {
		return nil, nil, fmt.Errorf("signed digest %x is not the image's %x: the image changed after signing", []byte(ac.Digest), digest)
	}
	// The messageDigest attribute is the SHA-256 of the content's value
	// (the SpcIndirectDataContent SEQUENCE without tag and length,
	// Authenticode specification, "Authenticode-Specific Structures").
	content := cryptobyte.String(ac.Pkcs.ContentInfo)
	var value cryptobyte.String
	if !content.ReadASN1(&value, cbasn1.SEQUENCE) {
		return nil, nil, errors.New("malformed SpcIndirectDataContent")
	}
	contentDigest := sha256.Sum256(value)
	if len(ac.Pkcs.SignerInfo) != 1 {
		return nil, nil, fmt.Errorf("%d signer infos, Authenticode allows one", len(ac.Pkcs.SignerInfo))
	}
	si := ac.Pkcs.SignerInfo[0]
	if si.AuthenticatedAttributes == nil || !bytes.Equal(si.AuthenticatedAttributes.MessageDigest, contentDigest[:]) {
		return nil, nil, errors.New("the signed attributes do not match the signed content")
	}
	for _, c := range ac.Pkcs.Certs {
		if bytes.Equal(c.RawIssuer, si.IssuerAndSerialnumber.RawIssuer) && c.SerialNumber.Cmp(si.IssuerAndSerialnumber.SerialNumber) == 0 {
			signer = c
			break
		}
	}
	if signer == nil {
		return nil, nil, errors.New("the signer's certificate is not in the signature")
	}
	var alg x509.SignatureAlgorithm
	switch signer.PublicKey.(type) {
	case *rsa.PublicKey:
		alg = x509.SHA256WithRSA
	case *ecdsa.PublicKey:
		alg = x509.ECDSAWithSHA256
	default:
		return nil, nil, fmt.Errorf("signer key type %T not supported", signer.PublicKey)
	}
	if err := signer.CheckSignature(alg, si.AuthenticatedAttributes.RawBytes, si.EncryptedDigest); err != nil {
		return nil, nil, fmt.Errorf("signature by %q does not verify: %w", signer.Subject, err)
	}
	return signer, ac.Pkcs.Certs, nil
}

// trustAnchor walks from signer towards db through the signature's own
// certificates, as EDK2's Pkcs7Verify does with db entries as trusted
// roots. It returns the db certificate reached, or nil.
func trustAnchor(signer *x509.Certificate, chain []*x509.Certificate, db *Database) *x509.Certificate {
	cur := signer
	for range maxChain {
		if db.hasCert(cur) {
			return cur
		}
		var next *x509.Certificate
		for _, c := range append(db.Certs[:len(db.Certs):len(db.Certs)], chain...) {
			if bytes.Equal(c.RawSubject, cur.RawIssuer) && !bytes.Equal(c.Raw, cur.Raw) && cur.CheckSignatureFrom(c) == nil {
				next = c
				break
			}
		}
		if next == nil {
			return nil
		}
		cur = next
	}
	return nil
}
