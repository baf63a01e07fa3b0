//! Small real datasets bundled with the crate (no network, no file access at run time).
//!
//! [`digits`]: the UCI *Optical Recognition of Handwritten Digits* 8×8 set (Alpaydin & Kaynak
//! 1998, CC BY 4.0; the copy in scikit-learn's `load_digits`), 1,797 samples, 64 inputs, 10
//! classes, with a fixed documented split. See `data/README.md` for the attribution and format.

use ndarray::Array2;

use crate::float::Float;

const DIGITS: &[u8] = include_bytes!("../data/digits.bin");
/// Number of samples in the digits set.
pub const DIGITS_SAMPLES: usize = 1797;
/// Input width of the digits set (8×8 pixels).
pub const DIGITS_FEATURES: usize = 64;
/// Number of classes of the digits set.
pub const DIGITS_CLASSES: usize = 10;

/// A classification dataset split into training and test sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset<F> {
    /// Training inputs `[samples, features]`.
    pub x_train: Array2<F>,
    /// Training labels.
    pub y_train: Vec<usize>,
    /// Test inputs `[samples, features]`.
    pub x_test: Array2<F>,
    /// Test labels.
    pub y_test: Vec<usize>,
}

/// Whether sample `i` (file order) of the digits set belongs to the test split: `i % 4 == 3`.
#[must_use]
pub fn digits_is_test(i: usize) -> bool {
    i % 4 == 3
}

/// The digits set with pixels scaled to `[0, 1]` (count / 16) and the fixed split of
/// [`digits_is_test`]: 1,348 training and 449 test samples, in file order.
///
/// # Examples
/// ```
/// let d = llfc::data::digits::<f32>();
/// assert_eq!(d.x_train.dim(), (1348, 64));
/// assert_eq!(d.x_test.dim(), (449, 64));
/// assert!(d.y_test.iter().all(|&y| y < 10));
/// ```
#[must_use]
pub fn digits<F: Float>() -> Dataset<F> {
    let (mut xtr, mut ytr, mut xte, mut yte) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, record) in DIGITS.chunks_exact(DIGITS_FEATURES + 1).enumerate() {
        let (x, y) = if digits_is_test(i) {
            (&mut xte, &mut yte)
        } else {
            (&mut xtr, &mut ytr)
        };
        x.extend(
            record[..DIGITS_FEATURES]
                .iter()
                .map(|&p| F::from_f64(f64::from(p) / 16.0)),
        );
        y.push(usize::from(record[DIGITS_FEATURES]));
    }
    let to_matrix = |v: Vec<F>, n: usize| {
        Array2::from_shape_vec((n, DIGITS_FEATURES), v).expect("records are 64 pixels each")
    };
    Dataset {
        x_train: to_matrix(xtr, ytr.len()),
        x_test: to_matrix(xte, yte.len()),
        y_train: ytr,
        y_test: yte,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_matches_the_published_set() {
        assert_eq!(DIGITS.len(), DIGITS_SAMPLES * (DIGITS_FEATURES + 1));
        let mut counts = [0usize; 10];
        for r in DIGITS.chunks_exact(65) {
            assert!(r[..64].iter().all(|&p| p <= 16));
            counts[usize::from(r[64])] += 1;
        }
        // Class counts of scikit-learn's load_digits.
        assert_eq!(counts, [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]);
        // First image of load_digits (a zero), row 0 and row 1.
        assert_eq!(
            &DIGITS[..16],
            &[0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
        );
        let d = digits::<f64>();
        assert_eq!(d.y_train.len() + d.y_test.len(), DIGITS_SAMPLES);
        assert_eq!(d.y_test[0], usize::from(DIGITS[3 * 65 + 64]));
        assert!(d.x_train.iter().all(|&v| (0.0..=1.0).contains(&v)));
        // Every class is in both splits.
        for c in 0..10 {
            assert!(d.y_train.contains(&c) && d.y_test.contains(&c));
        }
    }
}
