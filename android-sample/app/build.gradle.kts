import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    id("com.android.application")
    id("org.jetbrains.kotlin.android")
    id("org.jetbrains.kotlin.plugin.compose")
}

android {
    namespace = "dev.tern.sample"
    compileSdk = 35
    defaultConfig {
        applicationId = "dev.tern.sample"
        minSdk = 24
        targetSdk = 35
        versionCode = 1
        versionName = "0.1.0"
        // Point the sample at a collector: gradle installDebug -PternEndpoint=http://10.0.2.2:8080
        buildConfigField("String", "TERN_ENDPOINT", "\"${project.findProperty("ternEndpoint") ?: "http://10.0.2.2:8080"}\"")
        buildConfigField("String", "TERN_WRITE_KEY", "\"${project.findProperty("ternWriteKey") ?: "dev-key"}\"")
    }
    buildFeatures { compose = true; buildConfig = true }
    // The Kotlin layer shared with the JVM package, and the bindings generated for Android
    // (android = true: bindings/kotlin-android/uniffi-android.toml; see README).
    sourceSets["main"].java.srcDirs(
        "../../bindings/kotlin/src/main/kotlin",
        "../../bindings/generated/kotlin-android",
        "../../bindings/kotlin-android/src/main/kotlin",
    )
    // libtern_bindings.so per ABI, built by cargo-ndk (see README).
    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")
    compileOptions { sourceCompatibility = JavaVersion.VERSION_17; targetCompatibility = JavaVersion.VERSION_17 }
}

// kotlinOptions is deprecated in Kotlin 2.x; compilerOptions replaces it.
kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    implementation("net.java.dev.jna:jna:5.19.1@aar")
    // @RequiresApi in the generated bindings (android = true).
    implementation("androidx.annotation:annotation:1.9.1")
    implementation("androidx.activity:activity-compose:1.9.3")
    implementation(platform("androidx.compose:compose-bom:2024.12.01"))
    implementation("androidx.compose.material3:material3")
    implementation("androidx.lifecycle:lifecycle-process:2.8.7")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
}
