//! Certificates for a TLS sandbox (`sandbox up --tls`): a throw-away CA and
//! one server certificate signed by it, shared by every server of the
//! sandbox, generated at creation. The CA's key is not kept: nothing else
//! is ever signed with it.

use std::fs;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

use super::{SandboxError, io_error};

/// Where a TLS sandbox keeps its certificate files (`DIR/tls/`).
pub(super) fn tls_dir(sandbox_dir: &Path) -> PathBuf {
    sandbox_dir.join("tls")
}

/// The CA certificate clients verify servers with.
pub(super) fn ca_path(sandbox_dir: &Path) -> PathBuf {
    tls_dir(sandbox_dir).join("ca.pem")
}

/// The server certificate and key every server of the sandbox presents.
pub(super) fn server_paths(sandbox_dir: &Path) -> (PathBuf, PathBuf) {
    let d = tls_dir(sandbox_dir);
    (d.join("server.pem"), d.join("server-key.pem"))
}

/// Writes a new CA and a server certificate valid for `names` (IP
/// addresses become IP SANs, anything else DNS SANs).
pub(super) fn generate(sandbox_dir: &Path, names: &[String]) -> Result<(), SandboxError> {
    let cert_error =
        |e: rcgen::Error| SandboxError::InvalidOptions(format!("TLS certificate: {e}"));
    let dir = tls_dir(sandbox_dir);
    fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;

    let ca_key = KeyPair::generate().map_err(cert_error)?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(cert_error)?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "rwproxy sandbox CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).map_err(cert_error)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let key = KeyPair::generate().map_err(cert_error)?;
    let mut params = CertificateParams::new(names.to_vec()).map_err(cert_error)?;
    params.distinguished_name.push(
        DnType::CommonName,
        names
            .first()
            .map(String::as_str)
            .unwrap_or("rwproxy sandbox"),
    );
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).map_err(cert_error)?;

    let (cert_path, key_path) = server_paths(sandbox_dir);
    let ca = ca_path(sandbox_dir);
    fs::write(&ca, ca_cert.pem()).map_err(io_error("write", &ca))?;
    fs::write(&cert_path, cert.pem()).map_err(io_error("write", &cert_path))?;
    fs::write(&key_path, key.serialize_pem()).map_err(io_error("write", &key_path))?;
    Ok(())
}
