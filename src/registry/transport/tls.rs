//! TLS trust: the extra roots of a plan's `ca_file`, and telling a certificate the client
//! refused apart from any other failed connection.
//!
//! Verification against the system roots is reqwest's default and stays on; `ca_file` adds
//! roots to it (for a registry behind a private CA) and never replaces them. Only
//! `insecure = true` turns verification off, per host.

use std::path::Path;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::registry::reasons::CaFileError;

/// The certificates of a PEM file (a CA bundle: one or more `BEGIN CERTIFICATE` blocks; other
/// blocks such as keys are skipped), each checked to be a usable X.509 trust anchor, so a
/// wrong file is refused when the plan is read rather than at the first connection.
///
/// The error is a reason for a plan message ("holds no PEM certificate…"), without the path.
pub fn root_certificates(pem: &[u8]) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    let mut certs = Vec::new();
    // The same check reqwest (rustls) makes when it builds the client's root store.
    let mut store = rustls::RootCertStore::empty();
    for (i, item) in CertificateDer::pem_slice_iter(pem).enumerate() {
        let n = i + 1;
        let der = item.map_err(|e| CaFileError::Pem {
            n,
            message: e.to_string(),
        })?;
        store.add(der.clone()).map_err(|e| CaFileError::NotX509 {
            n,
            message: e.to_string(),
        })?;
        let cert = reqwest::Certificate::from_der(&der).map_err(|e| CaFileError::Unusable {
            n,
            message: e.to_string(),
        })?;
        certs.push(cert);
    }
    if certs.is_empty() {
        return Err(CaFileError::NoCertificate);
    }
    Ok(certs)
}

/// [`root_certificates`] of a file; the error names the file.
pub fn read_root_certificates(path: &Path) -> Result<Vec<reqwest::Certificate>, CaFileError> {
    let pem = std::fs::read(path).map_err(|source| CaFileError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    root_certificates(&pem).map_err(|reason| CaFileError::InFile {
        path: path.to_path_buf(),
        reason: Box::new(reason),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_files_without_certificates() {
        let e = root_certificates(b"just some text\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = root_certificates(&[0x30, 0x82, 0x01, 0x0a, 0x02])
            .unwrap_err()
            .to_string();
        assert!(e.contains("holds no PEM certificate"), "{e}");
        let e = root_certificates(
            b"-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("certificate 1 is not a usable X.509"), "{e}");
        let e =
            root_certificates(b"-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n")
                .unwrap_err()
                .to_string();
        assert!(e.contains("certificate 1 is not valid PEM"), "{e}");
    }

    #[test]
    fn reads_a_bundle_and_skips_keys() {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&key).unwrap();
        let other = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let bundle = format!(
            "# a comment\n{}{}{}",
            key.serialize_pem(),
            ca.pem(),
            other.pem()
        );
        assert_eq!(root_certificates(bundle.as_bytes()).unwrap().len(), 2);
    }
}
