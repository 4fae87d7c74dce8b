//! The bundled UCI digits and the loader's errors (verbatim, on small files written to a
//! temporary directory).

use std::io::Write;
use std::path::PathBuf;

use flate2::write::GzEncoder;
use flate2::Compression;
use phm_nn::data::{digits, stratified_indices, Dataset, SplitFractions};
use phm_nn::PhmError;
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Samples per class in the bundled file, counted with a separate script (data/README.md).
const CLASS_COUNTS: [usize; 10] = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180];

/// A file in the system's temporary directory, removed when dropped (also on panic).
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, bytes: &[u8]) -> TempFile {
        let path =
            std::env::temp_dir().join(format!("phm-nn-test-digits-{}-{name}", std::process::id()));
        std::fs::write(&path, bytes).unwrap();
        TempFile(path)
    }

    fn name(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn gzip(text: &str) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(text.as_bytes()).unwrap();
    enc.finish().unwrap()
}

/// One line: 64 copies of `pixel`, then `label`.
fn line(pixel: &str, label: &str) -> String {
    let mut fields = vec![pixel; 64];
    fields.push(label);
    fields.join(",")
}

/// A gzip file holding `text`, loaded; returns the error message (and the file's name).
fn load_err(name: &str, text: &str) -> (String, PhmError) {
    let file = TempFile::new(name, &gzip(text));
    let err = digits::load::<f64>(&file.0).unwrap_err();
    (file.name(), err)
}

#[test]
fn bundled_has_the_documented_shape_values_and_class_counts() {
    let data = digits::bundled::<f64>().unwrap();
    assert_eq!(data.x().dim(), (1797, 64));
    assert_eq!(data.y().len(), 1797);
    assert_eq!(data.class_counts(), CLASS_COUNTS);
    // First line of the file: 0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,… label 0.
    let first: Vec<f64> = data.x().row(0).iter().take(16).map(|&v| v * 16.0).collect();
    assert_eq!(
        first,
        [0., 0., 5., 13., 9., 1., 0., 0., 0., 0., 13., 15., 10., 15., 5., 0.]
    );
    assert_eq!(data.y()[..3], [0, 1, 2]);
    // Pixel sums of the first and last images (294 and 392), last label 8.
    assert_eq!(data.x().row(0).sum(), 294.0 / 16.0);
    assert_eq!(data.x().row(1796).sum(), 392.0 / 16.0);
    assert_eq!(data.y()[1796], 8);
    // Every pixel is k/16 for an integer k in 0..=16, and both ends occur.
    assert!(data
        .x()
        .iter()
        .all(|&v| (0.0..=1.0).contains(&v) && (v * 16.0).fract() == 0.0));
    assert_eq!(data.x().iter().cloned().fold(f64::INFINITY, f64::min), 0.0);
    assert_eq!(data.x().iter().cloned().fold(0.0, f64::max), 1.0);
}

#[test]
fn f32_and_f64_agree_and_load_reads_the_committed_file_like_bundled() {
    let d64 = digits::bundled::<f64>().unwrap();
    let d32 = digits::bundled::<f32>().unwrap();
    assert_eq!(d32.y(), d64.y());
    assert!(d32.x().iter().zip(d64.x()).all(|(&a, &b)| a as f64 == b));

    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/digits.csv.gz");
    assert_eq!(digits::load::<f64>(path).unwrap(), d64);
}

#[test]
fn a_small_file_is_parsed_with_crlf_spaces_and_no_final_newline() {
    let text = format!(
        "{}\r\n{}\n{}",
        line("16", "9"),
        line(" 8", "0 "),
        line("0", "3")
    );
    let file = TempFile::new("small.csv.gz", &gzip(&text));
    let data: Dataset<f32> = digits::load(&file.0).unwrap();
    assert_eq!(data.y(), [9, 0, 3]);
    assert_eq!(data.x().dim(), (3, 64));
    assert!(data.x().row(0).iter().all(|&v| v == 1.0));
    assert!(data.x().row(1).iter().all(|&v| v == 0.5));
    assert!(data.x().row(2).iter().all(|&v| v == 0.0));
}

#[test]
fn concatenated_gzip_members_are_one_file() {
    let mut bytes = gzip(&(line("1", "1") + "\n"));
    bytes.extend(gzip(&(line("2", "2") + "\n")));
    let data = digits::from_gzip::<f64>(&bytes, "two members").unwrap();
    assert_eq!(data.y(), [1, 2]);
}

#[test]
fn a_missing_file_is_an_io_error_naming_it() {
    let path = std::env::temp_dir().join(format!(
        "phm-nn-test-digits-{}-does-not-exist.csv.gz",
        std::process::id()
    ));
    let os_message = std::fs::File::open(&path).unwrap_err().to_string();
    let err = digits::load::<f64>(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("cannot read {}: {os_message}", path.display())
    );
    assert!(matches!(
        err,
        PhmError::Io {
            kind: std::io::ErrorKind::NotFound,
            ..
        }
    ));
}

#[test]
fn a_file_that_is_not_gzip_is_rejected_with_its_first_bytes() {
    let file = TempFile::new("plain.csv", (line("0", "0") + "\n").as_bytes());
    let err = digits::load::<f64>(&file.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: not gzip data: it starts with the bytes 30 2c, expected 1f 8b",
            file.name()
        )
    );
    assert_eq!(
        err,
        PhmError::Data {
            source: file.name(),
            line: None,
            reason: "not gzip data: it starts with the bytes 30 2c, expected 1f 8b".into(),
        }
    );

    let empty = TempFile::new("empty.csv.gz", b"");
    assert_eq!(
        digits::load::<f64>(&empty.0).unwrap_err().to_string(),
        format!("{}: the data is empty, expected gzip data", empty.name())
    );
}

// In the two tests below, the text after "corrupt gzip data: " is flate2's (1.1) own message.

#[test]
fn truncated_gzip_is_an_error_not_a_shorter_dataset() {
    let text: String = (0..40)
        .map(|i| line(&(i % 17).to_string(), "1") + "\n")
        .collect();
    let full = gzip(&text);
    let file = TempFile::new("truncated.csv.gz", &full[..full.len() / 2]);
    let err = digits::load::<f64>(&file.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: corrupt gzip data: incomplete deflate stream",
            file.name()
        )
    );
    // Cut inside the 8-byte trailer (CRC-32 and length): every line decompresses, but the
    // file is still incomplete.
    let file = TempFile::new("no-trailer.csv.gz", &full[..full.len() - 3]);
    let err = digits::load::<f64>(&file.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: corrupt gzip data: unexpected end of file", file.name())
    );
}

#[test]
fn corrupt_gzip_is_an_error() {
    let mut bytes = gzip(&(line("3", "4") + "\n"));
    let n = bytes.len();
    bytes[n - 8] ^= 0xff; // first byte of the CRC-32
    let file = TempFile::new("crc.csv.gz", &bytes);
    let err = digits::load::<f64>(&file.0).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{}: corrupt gzip data: corrupt gzip stream does not have a matching checksum",
            file.name()
        )
    );
}

#[test]
fn a_wrong_column_count_names_the_line_and_the_count() {
    let text = format!("{}\n{},5\n", line("0", "0"), line("0", "0"));
    let (name, err) = load_err("columns.csv.gz", &text);
    assert_eq!(
        err.to_string(),
        format!(
            "{name}, line 2: expected 65 comma-separated values (64 pixels, then the label), found 66"
        )
    );
    assert!(matches!(err, PhmError::Data { line: Some(2), .. }));
}

#[test]
fn an_empty_line_is_an_error() {
    let text = format!("{}\n\n{}\n", line("0", "0"), line("0", "0"));
    let (name, err) = load_err("blank.csv.gz", &text);
    assert_eq!(
        err.to_string(),
        format!("{name}, line 2: empty line, expected 65 comma-separated values")
    );
}

#[test]
fn a_non_numeric_value_names_line_column_and_value() {
    let mut fields = vec!["1"; 65];
    fields[6] = "x7";
    let text = format!(
        "{}\n{}\n{}\n",
        line("0", "0"),
        line("0", "0"),
        fields.join(",")
    );
    let (name, err) = load_err("text.csv.gz", &text);
    assert_eq!(
        err.to_string(),
        format!("{name}, line 3: column 7: expected an integer, found \"x7\"")
    );
    let (name, err) = load_err("decimal.csv.gz", &line("2.5", "1"));
    assert_eq!(
        err.to_string(),
        format!("{name}, line 1: column 1: expected an integer, found \"2.5\"")
    );
    let (name, err) = load_err("no-label.csv.gz", &line("2", ""));
    assert_eq!(
        err.to_string(),
        format!("{name}, line 1: column 65: expected an integer, found \"\"")
    );
}

#[test]
fn pixels_outside_0_to_16_are_errors() {
    let (name, err) = load_err(
        "17.csv.gz",
        &format!("{}\n{}\n", line("0", "0"), line("17", "0")),
    );
    assert_eq!(
        err.to_string(),
        format!("{name}, line 2: column 1: pixel value 17 is outside 0..=16")
    );
    let mut fields = vec!["0"; 65];
    fields[63] = "-1";
    let (name, err) = load_err("negative.csv.gz", &fields.join(","));
    assert_eq!(
        err.to_string(),
        format!("{name}, line 1: column 64: pixel value -1 is outside 0..=16")
    );
    let (name, err) = load_err("huge.csv.gz", &line("99999999999999999999", "0"));
    assert_eq!(
        err.to_string(),
        format!("{name}, line 1: column 1: pixel value 99999999999999999999 is outside 0..=16")
    );
}

#[test]
fn labels_outside_0_to_9_are_errors() {
    let (name, err) = load_err(
        "label.csv.gz",
        &format!("{}\n{}\n", line("0", "9"), line("0", "10")),
    );
    assert_eq!(
        err.to_string(),
        format!("{name}, line 2: column 65: label 10 is outside 0..=9")
    );
}

#[test]
fn data_without_samples_is_an_error() {
    let (name, err) = load_err("nothing.csv.gz", "");
    assert_eq!(err.to_string(), format!("{name}: no samples"));
}

#[test]
fn in_memory_parsers_name_their_source() {
    let err = digits::from_csv::<f32>(b"\xff\n", digits::BUNDLED_SOURCE).unwrap_err();
    assert_eq!(
        err.to_string(),
        "bundled digits, line 1: byte 1 (0xff) is not valid UTF-8 text"
    );
    let err = digits::from_gzip::<f32>(b"\x1f", "memory").unwrap_err();
    assert_eq!(
        err.to_string(),
        "memory: not gzip data: it starts with the bytes 1f, expected 1f 8b"
    );
}

#[test]
fn dataset_new_checks_lengths_and_select_picks_rows() {
    let x = ndarray::array![[1.0, 2.0], [3.0, 4.0]];
    let err = Dataset::new(x.clone(), vec![0]).unwrap_err();
    assert_eq!(err.to_string(), "labels has shape [1], expected [2]");
    let data = Dataset::new(x, vec![3, 1]).unwrap();
    assert_eq!(data.num_classes(), 4);
    assert_eq!(data.class_counts(), [0, 1, 0, 1]);
    let picked = data.select(&[1, 1, 0]);
    assert_eq!(
        picked.x(),
        ndarray::array![[3.0, 4.0], [3.0, 4.0], [1.0, 2.0]]
    );
    assert_eq!(picked.y(), [1, 1, 3]);
    assert!(data.select(&[]).is_empty());
}

#[test]
#[should_panic(expected = "Dataset::select: index 2 is out of range for 2 samples")]
fn select_out_of_range_panics_naming_the_index() {
    let data = Dataset::new(ndarray::array![[1.0], [2.0]], vec![0, 1]).unwrap();
    data.select(&[0, 2]);
}

// ---- stratified splits ----

fn seeded(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

#[test]
fn digits_split_60_20_20_has_the_hand_computed_per_class_counts() {
    let data = digits::bundled::<f32>().unwrap();
    let fractions = SplitFractions::new(0.6, 0.2, 0.2).unwrap();
    let split = data.stratified_split(fractions, &mut seeded(42)).unwrap();
    // Per class n: train = round(0.6 n), validation = round(0.8 n) - train, test = the rest.
    // E.g. n = 178: round(106.8) = 107, round(142.4) = 142, so (107, 35, 36).
    let expected: [(usize, usize, usize); 10] = [
        (107, 35, 36), // 178
        (109, 37, 36), // 182
        (106, 36, 35), // 177
        (110, 36, 37), // 183
        (109, 36, 36), // 181
        (109, 37, 36), // 182
        (109, 36, 36), // 181
        (107, 36, 36), // 179
        (104, 35, 35), // 174
        (108, 36, 36), // 180
    ];
    assert_eq!(split.train.class_counts(), expected.map(|e| e.0));
    assert_eq!(split.validation.class_counts(), expected.map(|e| e.1));
    assert_eq!(split.test.class_counts(), expected.map(|e| e.2));
    assert_eq!(
        (split.train.len(), split.validation.len(), split.test.len()),
        (1078, 360, 359)
    );
}

#[test]
fn digits_split_is_disjoint_covering_seeded_and_keeps_rows_with_their_labels() {
    let data = digits::bundled::<f64>().unwrap();
    let fractions = SplitFractions::new(0.6, 0.2, 0.2).unwrap();
    let parts = stratified_indices(data.y(), fractions, &mut seeded(3)).unwrap();
    let mut all: Vec<usize> = [&parts.train, &parts.validation, &parts.test]
        .iter()
        .flat_map(|p| p.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(all, (0..1797).collect::<Vec<_>>());
    for part in [&parts.train, &parts.validation, &parts.test] {
        assert!(part.windows(2).all(|w| w[0] < w[1]), "each part is sorted");
    }

    // The dataset split with the same seed holds exactly those rows.
    let split = data.stratified_split(fractions, &mut seeded(3)).unwrap();
    assert_eq!(split.test, data.select(&parts.test));
    assert_eq!(split.train.x().row(0), data.x().row(parts.train[0]));
    assert_eq!(split.validation.y()[5], data.y()[parts.validation[5]]);

    // Same seed, same split; another seed, another split.
    assert_eq!(
        stratified_indices(data.y(), fractions, &mut seeded(3)).unwrap(),
        parts
    );
    assert_ne!(
        stratified_indices(data.y(), fractions, &mut seeded(4)).unwrap(),
        parts
    );

    // The rows are drawn at random within each class, not taken in file order.
    let zeros: Vec<usize> = (0..1797).filter(|&i| data.y()[i] == 0).collect();
    let train_zeros: Vec<usize> = parts
        .train
        .iter()
        .copied()
        .filter(|&i| data.y()[i] == 0)
        .collect();
    assert_eq!(train_zeros.len(), 107);
    assert_ne!(train_zeros, zeros[..107]);
}

#[test]
fn small_split_rounds_half_away_from_zero_per_class() {
    // Class 0 has 3 rows, class 1 has 7. With (0.5, 0.25, 0.25):
    // class 0: round(1.5) = 2 train, round(2.25) - 2 = 0 validation, 1 test;
    // class 1: round(3.5) = 4 train, round(5.25) - 4 = 1 validation, 2 test.
    let labels = [1, 0, 1, 1, 0, 1, 1, 0, 1, 1];
    let fractions = SplitFractions::new(0.5, 0.25, 0.25).unwrap();
    let parts = stratified_indices(&labels, fractions, &mut seeded(0)).unwrap();
    let count = |rows: &[usize], class: usize| rows.iter().filter(|&&r| labels[r] == class).count();
    assert_eq!((count(&parts.train, 0), count(&parts.train, 1)), (2, 4));
    assert_eq!(
        (count(&parts.validation, 0), count(&parts.validation, 1)),
        (0, 1)
    );
    assert_eq!((count(&parts.test, 0), count(&parts.test, 1)), (1, 2));

    // A zero fraction gives an empty part; no labels give three empty parts.
    let parts = stratified_indices(
        &labels,
        SplitFractions::new(0.8, 0.0, 0.2).unwrap(),
        &mut seeded(0),
    )
    .unwrap();
    assert!(parts.validation.is_empty());
    assert_eq!((parts.train.len(), parts.test.len()), (8, 2));
    let parts = stratified_indices(&[], fractions, &mut seeded(0)).unwrap();
    assert!(parts.train.is_empty() && parts.validation.is_empty() && parts.test.is_empty());
}

#[test]
fn invalid_fractions_are_errors_naming_the_value() {
    let msg = |t: f64, v: f64, s: f64| SplitFractions::new(t, v, s).unwrap_err().to_string();
    assert_eq!(
        msg(1.5, -0.25, -0.25),
        "invalid split fractions: the train fraction must be in [0, 1], got 1.5"
    );
    assert_eq!(
        msg(0.5, -0.25, 0.75),
        "invalid split fractions: the validation fraction must be in [0, 1], got -0.25"
    );
    assert_eq!(
        msg(0.5, 0.5, f64::NAN),
        "invalid split fractions: the test fraction must be in [0, 1], got NaN"
    );
    assert_eq!(
        msg(0.5, 0.25, 0.5),
        "invalid split fractions: train + validation + test must be 1, got 0.5 + 0.25 + 0.5 = 1.25"
    );
    // The fields are public: the split checks them again.
    let unchecked = SplitFractions {
        train: 0.5,
        validation: 0.0,
        test: 0.0,
    };
    let err = stratified_indices(&[0, 1], unchecked, &mut seeded(0)).unwrap_err();
    assert_eq!(
        err,
        PhmError::InvalidArgument {
            what: "split fractions",
            reason: "train + validation + test must be 1, got 0.5 + 0 + 0 = 0.5".into(),
        }
    );
}
