"""Quality assessment of generated pairs (segmenter faithfulness, feature-space filters, FID/KID): see issue 4/5."""
