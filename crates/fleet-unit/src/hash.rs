//! fleet's unit hash: SHA-1 of a unit file's serialization.

use std::fmt;
use std::str::FromStr;

/// The SHA-1 of a serialized unit file. Shown as 40 lowercase hex digits, or 7 when short.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UnitHash([u8; 20]);

impl UnitHash {
    pub fn of(bytes: &[u8]) -> UnitHash {
        UnitHash(sha1_smol::Sha1::from(bytes).digest().bytes())
    }

    pub fn from_bytes(bytes: [u8; 20]) -> UnitHash {
        UnitHash(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The first 7 hex digits, as `list-unit-files` shows them.
    pub fn short(&self) -> String {
        let mut hex = self.to_string();
        hex.truncate(7);
        hex
    }
}

impl fmt::Display for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for UnitHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnitHash({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidHash(pub String);

impl fmt::Display for InvalidHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid unit hash {:?}: expected 40 hex digits", self.0)
    }
}

impl std::error::Error for InvalidHash {}

impl FromStr for UnitHash {
    type Err = InvalidHash;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || InvalidHash(s.to_owned());
        if s.len() != 40 || !s.is_ascii() {
            return Err(invalid());
        }
        let mut bytes = [0u8; 20];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        Ok(UnitHash(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_hex() {
        let hash = UnitHash::of(b"[Unit]\nDescription=x\n");
        let hex = hash.to_string();
        assert_eq!(hex.len(), 40);
        assert_eq!(hex.parse::<UnitHash>(), Ok(hash));
        assert_eq!(hash.short(), hex[..7]);
        assert!("xyz".parse::<UnitHash>().is_err());
        assert!("é".repeat(20).parse::<UnitHash>().is_err());
        assert!("g".repeat(40).parse::<UnitHash>().is_err());
    }
}
