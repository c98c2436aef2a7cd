//! Arithmetic in GF(2^16), the field the erasure code works in.
//!
//! Elements are polynomials over GF(2) of degree below 16, stored as the bits
//! of a `u16`; the field is reduced by x^16 + x^12 + x^3 + x + 1 (0x1100b),
//! the primitive polynomial SPQR v1 fixes. Addition is XOR, so subtraction is
//! the same operation.

/// The reduction polynomial, with its x^16 term.
const MODULUS: u32 = 0x1_100b;

/// One element of GF(2^16).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub(crate) struct Gf16(pub(crate) u16);

impl Gf16 {
    pub(crate) const ZERO: Self = Self(0);
    pub(crate) const ONE: Self = Self(1);

    /// The sum, which in characteristic 2 is also the difference.
    pub(crate) fn add(self, other: Self) -> Self {
        Self(self.0 ^ other.0)
    }

    /// The product: a carry-less multiplication, then a reduction.
    pub(crate) fn mul(self, other: Self) -> Self {
        let mut wide: u32 = 0;
        let a = u32::from(self.0);
        for bit in 0..16 {
            if other.0 & (1 << bit) != 0 {
                wide ^= a << bit;
            }
        }
        // Clear the bits above x^15 from the top down; each step folds one
        // high bit back into the low sixteen.
        for bit in (16..32).rev() {
            if wide & (1 << bit) != 0 {
                wide ^= MODULUS << (bit - 16);
            }
        }
        Self(wide as u16)
    }

    /// The multiplicative inverse, `self^(2^16 - 2)`; zero maps to zero.
    pub(crate) fn inverse(self) -> Self {
        // 2^16 - 2 = 0b1111_1111_1111_1110: square-and-multiply over its bits.
        let mut result = Self::ONE;
        let mut power = self;
        let mut exponent: u32 = 0xfffe;
        while exponent != 0 {
            if exponent & 1 == 1 {
                result = result.mul(power);
            }
            power = power.mul(power);
            exponent >>= 1;
        }
        result
    }

    /// The quotient; dividing by zero gives zero (callers never do).
    pub(crate) fn div(self, other: Self) -> Self {
        self.mul(other.inverse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A second, independent multiplication: Russian-peasant style with
    /// reduction at every shift.
    fn mul_by_shifts(mut a: u16, mut b: u16) -> u16 {
        let mut acc = 0u16;
        while b != 0 {
            if b & 1 == 1 {
                acc ^= a;
            }
            let carry = a & 0x8000 != 0;
            a <<= 1;
            if carry {
                a ^= (MODULUS & 0xffff) as u16;
            }
            b >>= 1;
        }
        acc
    }

    #[test]
    fn known_products() {
        // x * x^15 = x^16 = x^12 + x^3 + x + 1.
        assert_eq!(Gf16(2).mul(Gf16(0x8000)), Gf16(0x100b));
        assert_eq!(
            Gf16(0x8000).mul(Gf16(0x8000)),
            Gf16(mul_by_shifts(0x8000, 0x8000))
        );
        assert_eq!(Gf16(3).mul(Gf16(3)), Gf16(5));
        assert_eq!(Gf16(0).mul(Gf16(0x1234)), Gf16::ZERO);
        assert_eq!(Gf16(1).mul(Gf16(0x1234)), Gf16(0x1234));
    }

    #[test]
    fn the_multiplicative_group_has_order_65535() {
        // x generates the whole group only if the modulus is primitive.
        let x = Gf16(2);
        let mut p = Gf16::ONE;
        for i in 1..=65535u32 {
            p = p.mul(x);
            if p == Gf16::ONE {
                assert_eq!(i, 65535, "x has order {i}");
            }
        }
        assert_eq!(p, Gf16::ONE);
    }

    proptest! {
        #[test]
        fn mul_matches_the_shift_implementation(a: u16, b: u16) {
            prop_assert_eq!(Gf16(a).mul(Gf16(b)).0, mul_by_shifts(a, b));
        }

        #[test]
        fn field_laws(a: u16, b: u16, c: u16) {
            let (a, b, c) = (Gf16(a), Gf16(b), Gf16(c));
            prop_assert_eq!(a.mul(b), b.mul(a));
            prop_assert_eq!(a.mul(b.add(c)), a.mul(b).add(a.mul(c)));
            prop_assert_eq!(a.mul(b).mul(c), a.mul(b.mul(c)));
            prop_assert_eq!(a.add(b).add(b), a);
        }

        #[test]
        fn division_inverts_multiplication(a: u16, b in 1u16..) {
            let (a, b) = (Gf16(a), Gf16(b));
            prop_assert_eq!(a.mul(b).div(b), a);
            prop_assert_eq!(b.mul(b.inverse()), Gf16::ONE);
        }
    }
}
