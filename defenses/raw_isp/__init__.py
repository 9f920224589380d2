"""RAW camera-pipeline preprocessing (Zhang, Dong, Heide, ECCV 2022): synthetic camera, F, G, classical ISP."""
