"""The erasure study: each model's runs with their controls and fills, their summaries, the deletion and insertion
curves, the saliency maps' randomisation check, the report examples, and the correction policy fitted on them."""
