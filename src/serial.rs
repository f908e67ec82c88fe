//! Certificate serial numbers: 128 random bits, positive, at most 20 bytes.

use std::fmt;
use std::str::FromStr;

/// A certificate serial number (big-endian magnitude, no leading zero bytes).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Serial(Vec<u8>);

/// A serial that is not hex or is too long.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid serial number: {0} (expected up to 40 hex digits, colons allowed)")]
pub struct SerialError(&'static str);

impl Serial {
    /// A fresh random positive serial of 128 bits (16 bytes, top bit clear, never zero-led).
    pub fn random() -> Self {
        let mut bytes = [0u8; 16];
        aws_lc_rs::rand::fill(&mut bytes).expect("system random source failed");
        bytes[0] &= 0x7f;
        if bytes[0] == 0 {
            bytes[0] = 0x01;
        }
        Self(bytes.to_vec())
    }

    /// From big-endian bytes as they appear in a certificate (leading zeros dropped).
    pub fn from_bytes(bytes: &[u8]) -> Self {
        let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
        let mut v = bytes[start..].to_vec();
        if v.is_empty() {
            v.push(0);
        }
        Self(v)
    }

    /// Big-endian magnitude bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The rcgen form for signing.
    pub fn to_rcgen(&self) -> rcgen::SerialNumber {
        rcgen::SerialNumber::from_slice(&self.0)
    }
}

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0))
    }
}

impl fmt::Debug for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Serial({self})")
    }
}

impl FromStr for Serial {
    type Err = SerialError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let cleaned: String = s.trim().chars().filter(|c| *c != ':').collect();
        if cleaned.is_empty() {
            return Err(SerialError("empty"));
        }
        if cleaned.len() > 40 {
            return Err(SerialError("longer than 20 bytes"));
        }
        let padded = if cleaned.len() % 2 == 1 {
            format!("0{cleaned}")
        } else {
            cleaned
        };
        let bytes = hex::decode(padded.to_ascii_lowercase()).map_err(|_| SerialError("not hex"))?;
        Ok(Self::from_bytes(&bytes))
    }
}

impl serde::Serialize for Serial {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Serial {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_serials_are_positive_16_bytes() {
        for _ in 0..200 {
            let s = Serial::random();
            assert_eq!(s.as_bytes().len(), 16);
            assert!(s.as_bytes()[0] & 0x80 == 0 && s.as_bytes()[0] != 0);
        }
    }

    #[test]
    fn parses_hex_with_colons() {
        let s: Serial = "0A:bc:01".parse().unwrap();
        assert_eq!(s.as_bytes(), &[0x0a, 0xbc, 0x01]);
        assert_eq!(s.to_string(), "0abc01");
        assert!("xyz".parse::<Serial>().is_err());
        assert!("00".repeat(21).parse::<Serial>().is_err());
    }
}
