"""Each paper's contribution, one module per chapter slug; modules never import one another."""
