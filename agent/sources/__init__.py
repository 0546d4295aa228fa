"""One module per remote API, plus the shared HTTP and auth helpers; vendor JSON stops here."""
