// swift-tools-version:5.9
// Tern for Swift: the hand-written `Tern` module over the uniffi-generated `TernFFI` module and
// the `TernCore` xcframework that the GitHub workflow builds (.github/workflows/mobile.yml).
import PackageDescription

let package = Package(
    name: "Tern",
    // iOS only: the xcframework has an iOS device slice (arm64) and an iOS simulator slice
    // (arm64 + x86_64), nothing for macOS. SwiftPM cannot exclude a platform, so a plain
    // `swift build` on a Mac tries macOS and fails to link; build for an iOS destination with
    // xcodebuild, as the workflow does.
    platforms: [.iOS(.v15)],
    products: [
        .library(name: "Tern", targets: ["Tern"]),
    ],
    targets: [
        // libtern_bindings.a per slice, with tern_bindingsFFI.h and its module map (module
        // `tern_bindingsFFI`, the `ffi_module_name` of bindings/uniffi.toml).
        .binaryTarget(name: "TernCore", path: "TernCore.xcframework"),
        // The generated Swift bindings: uniffi names the file after the Swift `module_name` of
        // bindings/uniffi.toml, so it is bindings/generated/swift/TernFFI.swift, copied here by
        // the workflow.
        .target(name: "TernFFI", dependencies: ["TernCore"], path: "Sources/TernFFI"),
        .target(name: "Tern", dependencies: ["TernFFI"], path: "Sources/Tern"),
    ]
)
