"""The papers eoslab reproduces, cited the same way in the figures' JSON, the notebooks, the report and the docs."""

PAPERS: dict[str, str] = {
    "eoss": (
        "A. Andreyev & P. Beneventano, “Edge of Stochastic Stability: Revisiting the Edge of Stability for SGD”, "
        "2024, arXiv:2412.20553"
    ),
    "stochastic_eos": (
        "A. Agarwala & J. Pennington, “High dimensional analysis reveals conservative sharpening and a stochastic "
        "edge of stability”, 2024, arXiv:2404.19261"
    ),
    "iir": "Lee & Jang, “Implicitly regularized interaction between SGD and the loss landscape geometry”, preprint",
    "fox": (
        "C. Fox, “A Study of the Edge of Stability in Deep Learning”, MSc thesis, University of British Columbia, 2023"
    ),
    "arora": (
        "S. Arora, Z. Li & A. Panigrahi, “Understanding Gradient Descent on the Edge of Stability in Deep Learning”, "
        "ICML 2022, arXiv:2205.09745"
    ),
    "cohen": (
        "J. Cohen, S. Kaur, Y. Li, J. Z. Kolter & A. Talwalkar, “Gradient Descent on Neural Networks Typically Occurs "
        "at the Edge of Stability”, ICLR 2021, arXiv:2103.00065"
    ),
    "cohen_adaptive": (
        "J. M. Cohen, B. Ghorbani, S. Krishnan, N. Agarwal, S. Medapati, M. Badura, D. Suo, D. Cardoze, Z. Nado, "
        "G. E. Dahl & J. Gilmer, “Adaptive Gradient Methods at the Edge of Stability”, 2022, arXiv:2207.14484"
    ),
    "zhu": (
        "X. Zhu, Z. Wang, X. Wang, M. Zhou & R. Ge, “Understanding Edge-of-Stability Training Dynamics with a "
        "Minimalist Example”, ICLR 2023, arXiv:2210.03294"
    ),
    "vaswani": (
        "S. Vaswani, A. Mishkin, I. Laradji, M. Schmidt, G. Gidel & S. Lacoste-Julien, “Painless Stochastic "
        "Gradient: Interpolation, Line-Search, and Convergence Rates”, NeurIPS 2019, arXiv:1905.09997"
    ),
}
"""Short key → citation (authors, title, venue/year, arXiv id where the paper has one)."""
