//! The command line of the `compress` tool, parsed strictly: every flag at most once, every
//! value checked, unknown flags refused.

use std::collections::BTreeSet;

/// How to call the tool.
pub const USAGE: &str = "\
usage: compress IN.safetensors OUT.safetensors --n N [--layers name,name] [--force]
       compress            (no arguments: the demo on the digits data)
       compress --help

Compresses the linear layers of the state dict IN (2-D `<name>.weight` with a `<name>.bias`)
to PHM layers of dimension N and writes OUT; other tensors are copied unchanged, in their
dtype (F32 or F64).
  --n N            the hypercomplex dimension (required, at least 1)
  --layers a,b     only these layers; named layers are compressed even without a bias
                   (without --layers, a weight with no bias may be an embedding and is kept)
  --force          replace OUT if it exists (otherwise an existing OUT is an error)
  -h, --help       print this help";

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Print [`USAGE`] and exit successfully.
    Help,
    /// Run the demo.
    Demo,
    /// Compress `input` into `output`.
    Compress {
        /// The state dict to read.
        input: String,
        /// Where to write the result.
        output: String,
        /// The hypercomplex dimension.
        n: usize,
        /// The layers to consider (`None`: every linear layer).
        layers: Option<BTreeSet<String>>,
        /// Replace `output` if it exists.
        force: bool,
    },
}

/// Parses the arguments after the program name; the error says what is wrong.
pub fn parse(args: &[String]) -> Result<Command, String> {
    if args.is_empty() {
        return Ok(Command::Demo);
    }
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Ok(Command::Help);
    }
    let (mut paths, mut n, mut layers, mut force) = (Vec::new(), None, None, false);
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--n" => {
                let v = it.next().ok_or("--n needs a value")?;
                let parsed = v
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--n {v:?} is not a positive integer"))?;
                if n.replace(parsed).is_some() {
                    return Err(format!("--n is given more than once (again as {v})"));
                }
            }
            "--layers" => {
                let v = it.next().ok_or("--layers needs a value")?;
                let set: BTreeSet<String> = v
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .collect();
                if set.is_empty() {
                    return Err("--layers needs at least one layer name".into());
                }
                if layers.replace(set).is_some() {
                    return Err(format!("--layers is given more than once (again as {v})"));
                }
            }
            "--force" => {
                if force {
                    return Err("--force is given more than once".into());
                }
                force = true;
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
            path => paths.push(path.to_string()),
        }
    }
    let n = n.ok_or("--n N is required")?;
    match <[String; 2]>::try_from(paths) {
        Ok([input, output]) => Ok(Command::Compress {
            input,
            output,
            n,
            layers,
            force,
        }),
        Err(paths) => Err(format!(
            "expected two paths, IN and OUT, got {}: {paths:?}",
            paths.len()
        )),
    }
}
