"""`python -m deepfm.data.synthetic`: see the package docstring."""

from deepfm.data.synthetic import main

main()
