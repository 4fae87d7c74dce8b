//! Fixed algebra rules checked against textbook formulas and algebraic identities.
//!
//! No expected value here is computed by the code under test: products are compared with
//! formulas written out by hand, or with properties (norms, identities) they must satisfy.

mod common;

use ndarray::{array, Array1, Array3, ArrayView3, Axis, Ix1};
use phm_nn::algebra::{self, Algebra};
use phm_nn::kernels::phm;
use phm_nn::PhmError;

/// A random vector of length `n`, uniform in `[-1, 1)`.
fn random_vec(r: &mut rand::rngs::StdRng, n: usize) -> Array1<f64> {
    common::uniform_d(r, &[n])
        .into_dimensionality::<Ix1>()
        .unwrap()
}

/// The basis vector `e_k` of length `n`.
fn e(n: usize, k: usize) -> Array1<f64> {
    let mut v = Array1::zeros(n);
    v[k] = 1.0;
    v
}

fn mul(rules: &Array3<f64>, x: &Array1<f64>, y: &Array1<f64>) -> Array1<f64> {
    algebra::multiply(rules.view(), x.view(), y.view())
}

fn norm(x: &Array1<f64>) -> f64 {
    x.dot(x).sqrt()
}

#[track_caller]
fn assert_vec_close(a: &Array1<f64>, b: &Array1<f64>, tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: lengths");
    for (k, (x, y)) in a.iter().zip(b.iter()).enumerate() {
        assert!(
            (x - y).abs() <= tol,
            "{what}: component {k}: {x} vs {y}\n{a}\nvs\n{b}"
        );
    }
}

/// The Hamilton product written out by its textbook formula, `(a, b, c, d) = a + bi + cj + dk`.
fn hamilton(p: &Array1<f64>, q: &Array1<f64>) -> Array1<f64> {
    let (a1, b1, c1, d1) = (p[0], p[1], p[2], p[3]);
    let (a2, b2, c2, d2) = (q[0], q[1], q[2], q[3]);
    array![
        a1 * a2 - b1 * b2 - c1 * c2 - d1 * d2,
        a1 * b2 + b1 * a2 + c1 * d2 - d1 * c2,
        a1 * c2 - b1 * d2 + c1 * a2 + d1 * b2,
        a1 * d2 + b1 * c2 - c1 * b2 + d1 * a2,
    ]
}

fn all_algebras() -> Vec<(Algebra, Array3<f64>)> {
    [
        Algebra::Real,
        Algebra::Complex,
        Algebra::Quaternion,
        Algebra::Octonion,
        Algebra::Sedenion,
        Algebra::CayleyDickson(32),
        Algebra::CayleyDickson(64),
    ]
    .into_iter()
    .map(|a| (a, a.rules::<f64>().unwrap()))
    .collect()
}

// ---------------------------------------------------------------- complex and quaternion

#[test]
fn complex_rule_is_complex_multiplication() {
    let rules = algebra::complex::<f64>();
    assert_eq!(rules.dim(), (2, 2, 2));
    let mut r = common::rng(1);
    for _ in 0..50 {
        let x = random_vec(&mut r, 2);
        let y = random_vec(&mut r, 2);
        let (a, b, c, d) = (x[0], x[1], y[0], y[1]);
        let expected = array![a * c - b * d, a * d + b * c];
        assert_vec_close(&mul(&rules, &x, &y), &expected, 1e-15, "complex product");
    }
}

#[test]
fn quaternion_rule_is_hamilton_product() {
    let rules = algebra::quaternion::<f64>();
    assert_eq!(rules.dim(), (4, 4, 4));
    let mut r = common::rng(2);
    for _ in 0..50 {
        let p = random_vec(&mut r, 4);
        let q = random_vec(&mut r, 4);
        assert_vec_close(
            &mul(&rules, &p, &q),
            &hamilton(&p, &q),
            1e-15,
            "Hamilton product",
        );
    }
}

#[test]
fn quaternion_basis_products() {
    let h = algebra::quaternion::<f64>();
    let (one, i, j, k) = (e(4, 0), e(4, 1), e(4, 2), e(4, 3));
    assert_eq!(mul(&h, &i, &j), k, "i j = k");
    assert_eq!(mul(&h, &j, &k), i, "j k = i");
    assert_eq!(mul(&h, &k, &i), j, "k i = j");
    assert_eq!(mul(&h, &j, &i), -&k, "j i = -k");
    for (name, u) in [("i", &i), ("j", &j), ("k", &k)] {
        assert_eq!(mul(&h, u, u), -&one, "{name}² = -1");
    }
    // i j k = -1
    assert_eq!(mul(&h, &mul(&h, &i, &j), &k), -&one);
}

#[test]
fn quaternion_matches_design_tables_literally() {
    let h = algebra::quaternion::<f64>();
    let expected = [
        array![
            [1., 0., 0., 0.],
            [0., 1., 0., 0.],
            [0., 0., 1., 0.],
            [0., 0., 0., 1.]
        ],
        array![
            [0., -1., 0., 0.],
            [1., 0., 0., 0.],
            [0., 0., 0., -1.],
            [0., 0., 1., 0.]
        ],
        array![
            [0., 0., -1., 0.],
            [0., 0., 0., 1.],
            [1., 0., 0., 0.],
            [0., -1., 0., 0.]
        ],
        array![
            [0., 0., 0., -1.],
            [0., 0., -1., 0.],
            [0., 1., 0., 0.],
            [1., 0., 0., 0.]
        ],
    ];
    for (i, a) in expected.iter().enumerate() {
        assert_eq!(h.index_axis(Axis(0), i), a, "A_{}", i + 1);
    }
    let c = algebra::complex::<f64>();
    assert_eq!(c.index_axis(Axis(0), 0), array![[1., 0.], [0., 1.]]);
    assert_eq!(c.index_axis(Axis(0), 1), array![[0., -1.], [1., 0.]]);
    assert_eq!(algebra::real::<f64>(), Array3::from_elem((1, 1, 1), 1.0));
}

#[test]
fn build_weight_with_quaternion_rules_is_left_multiplication() {
    let rules = algebra::quaternion::<f64>();
    let mut r = common::rng(3);
    for _ in 0..20 {
        let q = random_vec(&mut r, 4);
        let p = random_vec(&mut r, 4);
        let s = q.clone().into_shape_with_order((4, 1, 1)).unwrap();
        let w = phm::build_weight(rules.view(), s.view()).unwrap();
        assert_eq!(w.dim(), (4, 4));
        assert_vec_close(&w.dot(&p), &hamilton(&q, &p), 1e-15, "W p = q ⊗ p");
    }
}

// ---------------------------------------------------------------- Cayley–Dickson

#[test]
fn cayley_dickson_reproduces_real_complex_quaternion() {
    assert_eq!(
        algebra::cayley_dickson::<f64>(1).unwrap(),
        algebra::real::<f64>()
    );
    assert_eq!(
        algebra::cayley_dickson::<f64>(2).unwrap(),
        algebra::complex::<f64>()
    );
    assert_eq!(
        algebra::cayley_dickson::<f64>(4).unwrap(),
        algebra::quaternion::<f64>()
    );
    assert_eq!(
        algebra::cayley_dickson::<f32>(4).unwrap(),
        algebra::quaternion::<f32>()
    );
    assert_eq!(
        algebra::cayley_dickson::<f64>(8).unwrap(),
        algebra::octonion::<f64>()
    );
    assert_eq!(
        algebra::cayley_dickson::<f64>(16).unwrap(),
        algebra::sedenion::<f64>()
    );
}

#[test]
fn cayley_dickson_rejects_non_powers_of_two() {
    for n in [0usize, 3, 12, 6, 100] {
        let err = algebra::cayley_dickson::<f64>(n).unwrap_err();
        match &err {
            PhmError::InvalidArgument { what, reason } => {
                assert_eq!(*what, "n");
                assert!(reason.contains(&format!("n = {n}")), "{reason}");
            }
            other => panic!("expected InvalidArgument for n = {n}, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(msg.contains("power of two"), "{msg}");
        assert!(msg.ends_with(&format!("got n = {n}")), "{msg}");
        let via_enum = Algebra::CayleyDickson(n).rules::<f32>().unwrap_err();
        assert_eq!(via_enum, err);
    }
}

// ---------------------------------------------------------------- octonions

#[test]
fn octonion_norm_is_multiplicative() {
    let o = algebra::octonion::<f64>();
    let mut r = common::rng(4);
    for _ in 0..200 {
        let a = random_vec(&mut r, 8);
        let b = random_vec(&mut r, 8);
        let lhs = norm(&mul(&o, &a, &b));
        let rhs = norm(&a) * norm(&b);
        assert!(
            (lhs - rhs).abs() <= 1e-12 * rhs,
            "|ab| = {lhs}, |a||b| = {rhs}"
        );
    }
}

#[test]
fn octonion_is_not_commutative_and_not_associative() {
    let n = 8;
    let o = algebra::octonion::<f64>();
    let (e1, e2) = (e(n, 1), e(n, 2));
    let e12 = mul(&o, &e1, &e2);
    assert_ne!(e12, mul(&o, &e2, &e1), "e1 e2 ≠ e2 e1");
    assert_eq!(e12, -mul(&o, &e2, &e1), "imaginary units anticommute");

    let mut triple = None;
    'search: for i in 0..n {
        for j in 0..n {
            for k in 0..n {
                let (ei, ej, ek) = (e(n, i), e(n, j), e(n, k));
                let left = mul(&o, &mul(&o, &ei, &ej), &ek);
                let right = mul(&o, &ei, &mul(&o, &ej, &ek));
                if left != right {
                    // Both sides are ± the same basis element; they differ by sign.
                    assert_eq!(left, -right);
                    triple = Some((i, j, k));
                    break 'search;
                }
            }
        }
    }
    let (i, j, k) = triple.expect("octonions are not associative");
    assert!(
        i > 0 && j > 0 && k > 0,
        "1 associates with everything: {i} {j} {k}"
    );

    // Random elements do not associate either.
    let mut r = common::rng(5);
    let (a, b, c) = (
        random_vec(&mut r, n),
        random_vec(&mut r, n),
        random_vec(&mut r, n),
    );
    let assoc = mul(&o, &mul(&o, &a, &b), &c) - mul(&o, &a, &mul(&o, &b, &c));
    assert!(norm(&assoc) > 1e-3, "associator {assoc}");
}

#[test]
fn octonion_is_alternative() {
    let o = algebra::octonion::<f64>();
    let mut r = common::rng(6);
    for _ in 0..100 {
        let a = random_vec(&mut r, 8);
        let b = random_vec(&mut r, 8);
        // Left: (a a) b = a (a b). Right: (b a) a = b (a a).
        let left = mul(&o, &mul(&o, &a, &a), &b);
        let left2 = mul(&o, &a, &mul(&o, &a, &b));
        assert_vec_close(&left, &left2, 1e-13, "(aa)b = a(ab)");
        let right = mul(&o, &mul(&o, &b, &a), &a);
        let right2 = mul(&o, &b, &mul(&o, &a, &a));
        assert_vec_close(&right, &right2, 1e-13, "(ba)a = b(aa)");
    }
}

#[test]
fn quaternion_is_associative() {
    let h = algebra::quaternion::<f64>();
    let mut r = common::rng(7);
    for _ in 0..50 {
        let (a, b, c) = (
            random_vec(&mut r, 4),
            random_vec(&mut r, 4),
            random_vec(&mut r, 4),
        );
        let left = mul(&h, &mul(&h, &a, &b), &c);
        let right = mul(&h, &a, &mul(&h, &b, &c));
        assert_vec_close(&left, &right, 1e-14, "(ab)c = a(bc)");
    }
}

// ---------------------------------------------------------------- sedenions

/// `e_a + s e_b` in dimension 16.
fn pair(a: usize, s: f64, b: usize) -> Array1<f64> {
    let mut v = e(16, a);
    v[b] += s;
    v
}

#[test]
fn sedenion_has_zero_divisors() {
    let s = algebra::sedenion::<f64>();
    // A concrete pair in this crate's numbering: (e_3 + e_10)(e_6 − e_15) = 0.
    let x = pair(3, 1.0, 10);
    let y = pair(6, -1.0, 15);
    assert_eq!(norm(&x), 2f64.sqrt());
    assert_eq!(norm(&y), 2f64.sqrt());
    assert_eq!(
        mul(&s, &x, &y),
        Array1::<f64>::zeros(16),
        "(e3 + e10)(e6 − e15) = 0"
    );
    // So |xy| = 0 ≠ 2 = |x||y|: the norm is not multiplicative.
    assert!((norm(&x) * norm(&y) - 2.0).abs() < 1e-15);

    // And zero divisors of this form are common: search all e_a ± e_b pairs. There are 84
    // primitive ones (de Marrais: 42 "assessors" × 2 diagonals), each with at least one
    // partner, so at least 84 ordered, signed pairs multiply to zero.
    let mut found = 0;
    for a in 1..16 {
        for b in a + 1..16 {
            for c in 1..16 {
                for d in c + 1..16 {
                    for (s1, s2) in [(1.0, 1.0), (1.0, -1.0), (-1.0, 1.0), (-1.0, -1.0)] {
                        let x = pair(a, s1, b);
                        let y = pair(c, s2, d);
                        if mul(&s, &x, &y).iter().all(|v| *v == 0.0) {
                            found += 1;
                        }
                    }
                }
            }
        }
    }
    assert!(found >= 84, "found only {found} zero-divisor pairs");
}

#[test]
fn octonion_has_no_zero_divisors_of_that_form() {
    let o = algebra::octonion::<f64>();
    for a in 0..8 {
        for b in 0..8 {
            for c in 0..8 {
                for d in 0..8 {
                    let mut x = e(8, a);
                    x[b] += 1.0;
                    let mut y = e(8, c);
                    y[d] -= 1.0;
                    if norm(&y) == 0.0 {
                        continue;
                    }
                    assert!(norm(&mul(&o, &x, &y)) > 0.5, "({a},{b}) ({c},{d})");
                }
            }
        }
    }
}

#[test]
fn sedenion_is_not_alternative() {
    let s = algebra::sedenion::<f64>();
    let mut r = common::rng(8);
    let a = random_vec(&mut r, 16);
    let b = random_vec(&mut r, 16);
    let diff = mul(&s, &mul(&s, &a, &a), &b) - mul(&s, &a, &mul(&s, &a, &b));
    assert!(norm(&diff) > 1e-3, "(aa)b − a(ab) = {diff}");
}

// ---------------------------------------------------------------- every algebra

fn check_structure(name: &str, a: ArrayView3<'_, f64>) {
    let n = a.len_of(Axis(0));
    assert_eq!(a.shape(), &[n, n, n], "{name}");
    // A_1 (index 0) is the identity: 1 · e_c = e_c.
    for r in 0..n {
        for c in 0..n {
            let expected = if r == c { 1.0 } else { 0.0 };
            assert_eq!(a[[0, r, c]], expected, "{name}: A_1[{r},{c}]");
        }
    }
    // Each A_i is a signed permutation matrix.
    for i in 0..n {
        let ai = a.index_axis(Axis(0), i);
        assert!(
            ai.iter().all(|v| *v == 0.0 || *v == 1.0 || *v == -1.0),
            "{name}: A_{i} entries"
        );
        for row in ai.rows() {
            assert_eq!(
                row.iter().filter(|v| **v != 0.0).count(),
                1,
                "{name}: A_{i} row"
            );
        }
        for col in ai.columns() {
            assert_eq!(
                col.iter().filter(|v| **v != 0.0).count(),
                1,
                "{name}: A_{i} column"
            );
        }
    }
    // Exactly one rule contributes to each (r, c): Σ_i A_i[r,c]² = 1.
    for r in 0..n {
        for c in 0..n {
            let s: f64 = (0..n).map(|i| a[[i, r, c]].powi(2)).sum();
            assert_eq!(s, 1.0, "{name}: Σ_i A_i[{r},{c}]²");
        }
    }
    // e_i · 1 = e_i, and every imaginary unit squares to −1 and anticommutes with the others.
    for i in 0..n {
        assert_eq!(a[[i, i, 0]], 1.0, "{name}: e_{i} · 1 = e_{i}");
        if i > 0 {
            assert_eq!(a[[i, 0, i]], -1.0, "{name}: e_{i}² = −1");
        }
        for c in 1..n {
            if c != i && i > 0 {
                assert_eq!(
                    a.slice(ndarray::s![i, .., c]),
                    -&a.slice(ndarray::s![c, .., i]),
                    "{name}: e_{i} e_{c} = −e_{c} e_{i}"
                );
            }
        }
    }
}

#[test]
fn every_algebra_has_signed_permutation_rules() {
    for (alg, rules) in all_algebras() {
        assert_eq!(rules.len_of(Axis(0)), alg.dim(), "{alg}");
        check_structure(&alg.name(), rules.view());
    }
}

#[test]
fn f32_and_f64_rules_agree() {
    for (alg, rules64) in all_algebras() {
        let rules32 = alg.rules::<f32>().unwrap();
        assert_eq!(rules32.dim(), rules64.dim(), "{alg}");
        for (a, b) in rules32.iter().zip(rules64.iter()) {
            assert_eq!(f64::from(*a), *b, "{alg}");
        }
    }
    assert_eq!(
        algebra::real::<f32>().mapv(f64::from),
        algebra::real::<f64>()
    );
    assert_eq!(
        algebra::complex::<f32>().mapv(f64::from),
        algebra::complex::<f64>()
    );
    assert_eq!(
        algebra::quaternion::<f32>().mapv(f64::from),
        algebra::quaternion::<f64>()
    );
    assert_eq!(
        algebra::octonion::<f32>().mapv(f64::from),
        algebra::octonion::<f64>()
    );
    assert_eq!(
        algebra::sedenion::<f32>().mapv(f64::from),
        algebra::sedenion::<f64>()
    );
}

#[test]
fn f32_multiply_matches_hamilton() {
    let h = algebra::quaternion::<f32>();
    let p = array![1.0f32, 2.0, 3.0, 4.0];
    let q = array![-0.5f32, 0.25, 2.0, -1.0];
    let got = algebra::multiply(h.view(), p.view(), q.view()).mapv(f64::from);
    let expected = hamilton(&p.mapv(f64::from), &q.mapv(f64::from));
    assert_vec_close(&got, &expected, 1e-6, "f32 Hamilton product");
}

// ---------------------------------------------------------------- the enum and `multiply`

#[test]
fn algebra_names_dims_and_display() {
    let cases = [
        (Algebra::Real, 1, "real"),
        (Algebra::Complex, 2, "complex"),
        (Algebra::Quaternion, 4, "quaternion"),
        (Algebra::Octonion, 8, "octonion"),
        (Algebra::Sedenion, 16, "sedenion"),
        (Algebra::CayleyDickson(32), 32, "cayley-dickson(32)"),
    ];
    for (alg, n, name) in cases {
        assert_eq!(alg.dim(), n);
        assert_eq!(alg.name(), name);
        assert_eq!(alg.to_string(), name);
        assert_eq!(alg.rules::<f64>().unwrap().dim(), (n, n, n), "{name}");
    }
    assert_eq!(
        Algebra::Quaternion.rules::<f64>().unwrap(),
        algebra::quaternion::<f64>()
    );
    assert_eq!(
        Algebra::CayleyDickson(4).rules::<f64>().unwrap(),
        algebra::quaternion::<f64>()
    );
}

#[test]
fn multiply_works_on_non_standard_layouts() {
    // A transposed view of the rules is a valid (n, n, n) view with other strides.
    let h = algebra::quaternion::<f64>();
    let mut r = common::rng(9);
    let p = random_vec(&mut r, 4);
    let q = random_vec(&mut r, 4);
    let owned_t = h.view().permuted_axes([0, 2, 1]).to_owned();
    let view_t = h.view().permuted_axes([0, 2, 1]);
    assert_eq!(
        algebra::multiply(view_t, p.view(), q.view()),
        algebra::multiply(owned_t.view(), p.view(), q.view())
    );
}

#[test]
#[should_panic(expected = "expected n = 4")]
fn multiply_panics_on_length_mismatch() {
    let h = algebra::quaternion::<f64>();
    algebra::multiply(h.view(), e(4, 0).view(), e(3, 0).view());
}
