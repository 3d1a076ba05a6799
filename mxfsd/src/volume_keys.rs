//! Keys derived from the volume's secret (design section 6).
//!
//! The first owner writes a random 32-byte secret into the lockstate
//! header; possession of the disk is membership.  Each use of the secret
//! (the discovery MAC, the peer links' Noise PSK) gets its own key,
//! derived here with HMAC-SHA256 under a distinct label, so that a key
//! that leaks from one use says nothing about another.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The 32-byte volume secret from the lockstate header.
#[derive(Clone, PartialEq, Eq)]
pub struct VolumeSecret([u8; 32]);

/// What a derived key is for; each purpose has its own label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPurpose {
    /// MAC of discovery announcements.
    Announce,
    /// Pre-shared key of the peer links' Noise handshake.
    PeerPsk,
}

impl KeyPurpose {
    fn label(self) -> &'static [u8] {
        match self {
            KeyPurpose::Announce => b"mxfs1 discovery announcement mac",
            KeyPurpose::PeerPsk => b"mxfs1 peer link noise psk",
        }
    }
}

impl VolumeSecret {
    pub fn new(bytes: [u8; 32]) -> Self {
        VolumeSecret(bytes)
    }

    /// The key for one purpose, bound to one volume.
    pub fn derive(&self, purpose: KeyPurpose, volume: &[u8; 16]) -> [u8; 32] {
        // The secret is exactly 32 bytes, which HMAC accepts as a key of
        // any length: new_from_slice cannot fail here.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
        mac.update(purpose.label());
        mac.update(volume);
        mac.finalize().into_bytes().into()
    }
}

/// Never print the secret itself.
impl std::fmt::Debug for VolumeSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VolumeSecret(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purposes_and_volumes_get_distinct_keys() {
        let s = VolumeSecret::new([7; 32]);
        let v1 = [1; 16];
        let v2 = [2; 16];
        let a = s.derive(KeyPurpose::Announce, &v1);
        assert_ne!(a, s.derive(KeyPurpose::PeerPsk, &v1));
        assert_ne!(a, s.derive(KeyPurpose::Announce, &v2));
        assert_eq!(a, s.derive(KeyPurpose::Announce, &v1));
        assert_ne!(
            a,
            VolumeSecret::new([8; 32]).derive(KeyPurpose::Announce, &v1)
        );
    }

    #[test]
    fn debug_hides_the_secret() {
        assert_eq!(
            format!("{:?}", VolumeSecret::new([7; 32])),
            "VolumeSecret(..)"
        );
    }
}
