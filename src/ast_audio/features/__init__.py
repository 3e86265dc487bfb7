"""Audio features: Kaldi-compatible log-mel filter banks and the AST feature extractor."""
