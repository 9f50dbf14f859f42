"""External-truth cases: ground truth from converters that other projects ship."""
