_instruments = ("rocksdict >= 0.3.25",)

_supports_metrics = True
