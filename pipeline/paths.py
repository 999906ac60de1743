"""Default locations of the pipeline's artifacts, relative to the project root.

`dvc.yaml` passes these same paths on each stage's command line (it is the source of truth for the file
graph); the user-facing commands (`validate`, `score`, `submit`) fall back to them.
"""

from pathlib import Path

RAW = Path("data/raw")  # the competition in the HW2P2 layout, as the model may read it
SOLUTION = Path("data/solution")  # hidden answers (synthetic/imagefolder only), never read by training
INDEX = Path("data/index")  # manifests written by the index stage
DECODED = Path("data/decoded")  # uint8 image arrays written by the decode stage
FOLDS = Path("folds/folds.csv")
AUGMENT = Path("data/augment")
MODELS = Path("models")
SOURCE_BACKBONE = "backbone.pt"  # in the source stage's folder: the state dict each train@k starts from
EMBEDDINGS = Path("embeddings")
METRICS = Path("metrics")
PLOTS = Path("plots")
SUBMISSIONS = Path("submissions")
CLASSIFICATION_CSV = SUBMISSIONS / "classification.csv"
VERIFICATION_CSV = SUBMISSIONS / "verification.csv"
CLASSIFICATION_SOLUTION = SOLUTION / "classification_solution.csv"  # id,label in test-order order
VERIFICATION_SOLUTION = SOLUTION / "verification_solution.csv"  # trial,label in trial-file order
