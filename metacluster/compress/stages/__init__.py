"""The stages: the meta-learners and their regression (meta), soft / DKM clustering
(soft), the training loop and validation (functional), the byte-budget allocation
(allocation) and the stage runners, fine-tuning included (runners)."""
